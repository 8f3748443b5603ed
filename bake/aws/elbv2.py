"""Application load balancers, target groups, listeners and target health."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from bake.aws import shapes
from bake.aws.errors import error_code
from bake.aws.session import Cloud
from bake.errors import BakeError


def find_load_balancer(cloud: Cloud, name: str) -> dict[str, Any] | None:
    """The load balancer called `name`, or None (once found, it is not asked for again)."""
    if (known := cloud.known.get(("load-balancer", name))) is not None:
        return known
    try:
        found = cloud.client("elbv2").describe_load_balancers(Names=[name])["LoadBalancers"]
    except ClientError as exc:
        if error_code(exc) == "LoadBalancerNotFound":
            return None
        raise
    if not found:
        return None
    cloud.known["load-balancer", name] = found[0]
    return found[0]


def create_load_balancer(
    cloud: Cloud, name: str, subnets: list[str], security_groups: list[str]
) -> dict[str, Any]:
    """Create an internet-facing application load balancer."""
    return cloud.client("elbv2").create_load_balancer(
        Name=name, Subnets=subnets, SecurityGroups=security_groups, Type="application"
    )["LoadBalancers"][0]


def find_target_group(cloud: Cloud, name: str) -> dict[str, Any] | None:
    """The target group called `name`, or None (once found, it is not asked for again: its ARN,
    protocol, port, VPC and health check are what a swap reads)."""
    if (known := cloud.known.get(("target-group", name))) is not None:
        return known
    try:
        found = cloud.client("elbv2").describe_target_groups(Names=[name])["TargetGroups"]
    except ClientError as exc:
        if error_code(exc) == "TargetGroupNotFound":
            return None
        raise
    if not found:
        return None
    cloud.known["target-group", name] = found[0]
    return found[0]


def create_target_group(cloud: Cloud, name: str, **settings: Any) -> dict[str, Any]:
    """Create a target group with the given CreateTargetGroup settings."""
    created = cloud.client("elbv2").create_target_group(Name=name, **settings)["TargetGroups"][0]
    cloud.known["target-group", name] = created
    return created


def mirrored_settings(cloud: Cloud, source: dict[str, Any]) -> dict[str, Any]:
    """What CreateTargetGroup takes of the described target group `source` (by botocore's model):
    its protocol, port, VPC, target type and health check; not its name, ARN or tags."""
    return shapes.for_request(
        cloud.client("elbv2"),
        "CreateTargetGroup",
        source,
        without=("Name", "Tags"),
        drop_empty=True,
    )


def mirror_target_group(cloud: Cloud, name: str, source: dict[str, Any]) -> dict[str, Any]:
    """Create a target group with the protocol, port, VPC and health check of `source`."""
    return create_target_group(cloud, name, **mirrored_settings(cloud, source))


def find_listener(cloud: Cloud, load_balancer_arn: str, port: int) -> dict[str, Any] | None:
    """The load balancer's listener on `port`, or None."""
    paginator = cloud.client("elbv2").get_paginator("describe_listeners")
    for page in paginator.paginate(LoadBalancerArn=load_balancer_arn):
        for listener in page["Listeners"]:
            if listener["Port"] == port:
                return listener
    return None


def _forward(weights: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {
            "Type": "forward",
            "ForwardConfig": {
                "TargetGroups": [
                    {"TargetGroupArn": arn, "Weight": weight} for arn, weight in weights.items()
                ]
            },
        }
    ]


def create_forward_listener(
    cloud: Cloud, load_balancer_arn: str, port: int, target_group_arn: str
) -> dict[str, Any]:
    """Create an HTTP listener whose default action forwards everything to one target group."""
    return cloud.client("elbv2").create_listener(
        LoadBalancerArn=load_balancer_arn,
        Protocol="HTTP",
        Port=port,
        DefaultActions=_forward({target_group_arn: 100}),
    )["Listeners"][0]


@dataclass(frozen=True)
class TrafficSwitch:
    """Where a service's traffic is split between colours: a listener's default actions, or one
    of its rules (host or path based)."""

    listener_arn: str
    rule_arn: str | None = None
    load_balancer_arn: str = ""

    def describe(self) -> str:
        return f"rule {self.rule_arn}" if self.rule_arn else f"listener {self.listener_arn}"


def find_rule(cloud: Cloud, listener_arn: str, rule: int | str) -> dict[str, Any] | None:
    """The listener's rule with this priority (an int) or ARN (a string), or None."""
    paginator = cloud.client("elbv2").get_paginator("describe_rules")
    for page in paginator.paginate(ListenerArn=listener_arn):
        for found in page["Rules"]:
            if found["RuleArn"] == rule or found["Priority"] == str(rule):
                return found
    return None


def actions_of(cloud: Cloud, switch: TrafficSwitch) -> list[dict[str, Any]]:
    """The actions that split the traffic, as the load balancer holds them now."""
    client = cloud.client("elbv2")
    if switch.rule_arn:
        (rule,) = client.describe_rules(RuleArns=[switch.rule_arn])["Rules"]
        return list(rule["Actions"])
    (listener,) = client.describe_listeners(ListenerArns=[switch.listener_arn])["Listeners"]
    return list(listener["DefaultActions"])


def forward_weights(actions: list[dict[str, Any]]) -> dict[str, int]:
    """Target group ARN -> weight in the forward action among `actions`."""
    for action in actions:
        if action.get("Type") != "forward":
            continue
        groups = action.get("ForwardConfig", {}).get("TargetGroups")
        if groups:
            return {group["TargetGroupArn"]: group.get("Weight", 1) for group in groups}
        if action.get("TargetGroupArn"):
            return {action["TargetGroupArn"]: 100}
    return {}


def with_weights(actions: list[dict[str, Any]], weights: dict[str, int]) -> list[dict[str, Any]]:
    """`actions` with only the forward action's target group weights changed.

    Every other action (authenticate-oidc, authenticate-cognito, ...), the order, and the forward's
    stickiness stay as they are. An OIDC action keeps its client secret, which describe calls never
    return, through `UseExistingClientSecret`.
    """
    changed = copy.deepcopy(actions)
    forward = next((action for action in changed if action.get("Type") == "forward"), None)
    if forward is None:
        raise BakeError("the traffic's actions have no forward action to weigh", hint=str(actions))
    forward.pop("TargetGroupArn", None)
    config = forward.setdefault("ForwardConfig", {})
    config["TargetGroups"] = [
        {"TargetGroupArn": arn, "Weight": weight} for arn, weight in weights.items()
    ]
    for action in changed:
        if action.get("Type") == "authenticate-oidc":
            action["AuthenticateOidcConfig"].pop("ClientSecret", None)
            action["AuthenticateOidcConfig"]["UseExistingClientSecret"] = True
    return changed


def set_forward_weights(cloud: Cloud, switch: TrafficSwitch, weights: dict[str, int]) -> None:
    """Give the forward action of the listener (or rule) these target group weights, and change
    nothing else."""
    actions = with_weights(actions_of(cloud, switch), weights)
    client = cloud.client("elbv2")
    if switch.rule_arn:
        client.modify_rule(RuleArn=switch.rule_arn, Actions=actions)
    else:
        client.modify_listener(ListenerArn=switch.listener_arn, DefaultActions=actions)


def target_health(
    cloud: Cloud, target_group_arn: str, instance_ids: list[str]
) -> dict[str, dict[str, str]]:
    """Instance id -> {State, Reason, Description} in the target group.

    Asks about these instances only: a target group can still list instances that have left it.
    """
    if not instance_ids:
        return {}
    descriptions = cloud.client("elbv2").describe_target_health(
        TargetGroupArn=target_group_arn, Targets=[{"Id": id_} for id_ in instance_ids]
    )["TargetHealthDescriptions"]
    return {entry["Target"]["Id"]: entry["TargetHealth"] for entry in descriptions}


def unhealthy(health: dict[str, dict[str, str]]) -> dict[str, str]:
    """Instance id -> why, for every target not healthy."""
    return {
        instance_id: " ".join(
            part
            for part in (state.get("State"), state.get("Reason"), state.get("Description"))
            if part
        )
        for instance_id, state in health.items()
        if state.get("State") != "healthy"
    }
