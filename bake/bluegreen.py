"""A service's blue/green state as the cloud holds it, traffic switches between colours, rollback.

"Live" is the colour whose target group holds the largest weight in the listener's default forward
action (blue on a tie); "standby" is the other colour, when its Auto Scaling group exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bake import releases, rollouts
from bake.aws import autoscaling, elbv2, launch_templates
from bake.aws.session import Cloud
from bake.config import COLORS, ServiceConfig
from bake.errors import BakeError, InputError
from bake.polling import wait_until, waiter_config
from bake.rollouts import Rollout

STATE_KEYS = (
    "color",
    "asg",
    "ami",
    "release",
    "launch_template_version",
    "target_group",
    "target_group_arn",
    "weight",
    "desired",
    "in_service",
    "healthy",
)


def other(color: str) -> str:
    """The colour that is not `color`."""
    return "green" if color == "blue" else "blue"


@dataclass
class Health:
    """Whether a colour's instances are InService and healthy in its target group."""

    expected: int
    in_service: list[str] = field(default_factory=list)
    unhealthy: dict[str, str] = field(default_factory=dict)
    # The group as it was read for this answer, and when (time.monotonic()).
    group: dict[str, Any] | None = field(default=None, repr=False)
    read_at: float = 0.0

    @property
    def ok(self) -> bool:
        return len(self.in_service) >= self.expected > 0 and not self.unhealthy

    def describe(self) -> str:
        """What is wrong, in one line, naming the instances and their health reason."""
        problems = []
        if len(self.in_service) < self.expected:
            problems.append(f"{len(self.in_service)} of {self.expected} instances InService")
        problems += [f"{instance_id} {why}" for instance_id, why in sorted(self.unhealthy.items())]
        return "; ".join(problems) or "healthy"


@dataclass
class ColorState:
    """One colour of a service: its Auto Scaling group, image, target group and traffic."""

    color: str
    asg: str | None = None
    ami: str | None = None
    release: str | None = None  # the version its launch template version's user data names
    launch_template_id: str | None = None
    launch_template_version: int | None = None
    target_group: str | None = None
    target_group_arn: str | None = None
    weight: int = 0
    desired: int = 0
    in_service: int = 0
    healthy: int = 0
    health: Health = field(default_factory=lambda: Health(0))
    group: dict[str, Any] | None = field(default=None, repr=False)
    target_group_info: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in STATE_KEYS}


@dataclass
class ServiceState:
    """Both colours of a service, the listener that chooses between them, and the rollout the
    load balancer records (None when no swap has recorded one)."""

    service: str
    switch: elbv2.TrafficSwitch
    live: ColorState
    standby: ColorState | None
    rollout: Rollout | None = None
    # Both colours, each with its target group when it has one, even without a group.
    colors: dict[str, ColorState] = field(default_factory=dict)

    def color(self, color: str) -> ColorState | None:
        """The state of `color`, when it has an Auto Scaling group or carries traffic."""
        found = [entry for entry in (self.live, self.standby) if entry and entry.color == color]
        return found[0] if found else None

    def weight(self, color: str) -> int:
        found = self.color(color)
        return found.weight if found else 0

    def share(self, color: str) -> float:
        """The percentage of the traffic `color` gets: its weight over the sum of the weights."""
        total = sum(self.weight(each) for each in COLORS)
        return 100 * self.weight(color) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "live": self.live.to_dict(),
            "standby": self.standby.to_dict() if self.standby else None,
            "rollout": self.rollout.to_dict() if self.rollout else None,
        }


def _not_found(service: ServiceConfig, cloud: Cloud, what: str) -> BakeError:
    return BakeError(
        f"service {service.name}: {what} in {cloud.region}",
        hint="on the local target run `bake local up`, which seeds every configured service; "
        "on AWS the load balancer and listener come from your team's infrastructure",
    )


def find_switch(
    cloud: Cloud, service: ServiceConfig
) -> tuple[elbv2.TrafficSwitch, list[dict[str, Any]]]:
    """Where the service's traffic is split (its listener, or its `listener_rule`) and the actions
    there now; a BakeError saying what is missing when there is none."""
    load_balancer = elbv2.find_load_balancer(cloud, service.load_balancer)
    if load_balancer is None:
        raise _not_found(service, cloud, f"no load balancer named '{service.load_balancer}'")
    listener = elbv2.find_listener(cloud, load_balancer["LoadBalancerArn"], service.listener_port)
    if listener is None:
        raise _not_found(
            service,
            cloud,
            f"load balancer '{service.load_balancer}' has no listener on port "
            f"{service.listener_port}",
        )
    if service.listener_rule is None:
        switch = elbv2.TrafficSwitch(listener["ListenerArn"], None, listener["LoadBalancerArn"])
        return switch, listener["DefaultActions"]
    rule = elbv2.find_rule(cloud, listener["ListenerArn"], service.listener_rule)
    if rule is None:
        raise _not_found(
            service,
            cloud,
            f"the listener on port {service.listener_port} of '{service.load_balancer}' has no "
            f"rule {service.listener_rule}",
        )
    switch = elbv2.TrafficSwitch(
        listener["ListenerArn"], rule["RuleArn"], listener["LoadBalancerArn"]
    )
    return switch, rule["Actions"]


def check_health(
    cloud: Cloud, group: dict[str, Any] | None, target_group_arn: str | None, expected: int
) -> Health:
    """How many of the group's instances are InService, and which are not healthy targets."""
    instance_ids = autoscaling.in_service(group) if group else []
    health = Health(expected, instance_ids, group=group, read_at=time.monotonic())
    if target_group_arn:
        health.unhealthy = elbv2.unhealthy(
            elbv2.target_health(cloud, target_group_arn, instance_ids)
        )
    else:
        health.unhealthy = {instance_id: "not in any target group" for instance_id in instance_ids}
    return health


def _color_state(
    cloud: Cloud,
    service: ServiceConfig,
    color: str,
    group: dict[str, Any] | None,
    weights: dict[str, int],
) -> ColorState:
    state = ColorState(color, group=group)
    target_group = elbv2.find_target_group(cloud, service.names(color).target_group)
    if target_group:
        state.target_group = target_group["TargetGroupName"]
        state.target_group_arn = target_group["TargetGroupArn"]
        state.target_group_info = target_group
        state.weight = weights.get(state.target_group_arn, 0)
    if group is None:
        return state
    state.asg = group["AutoScalingGroupName"]
    state.desired = group["DesiredCapacity"]
    template = group.get("LaunchTemplate")
    if template:
        pinned = launch_templates.version(
            cloud, template["LaunchTemplateId"], template.get("Version") or "$Default"
        )
        state.launch_template_id = template["LaunchTemplateId"]
        state.launch_template_version = int(pinned["VersionNumber"])
        state.ami = pinned["LaunchTemplateData"].get("ImageId")
        state.release = release_of(pinned["LaunchTemplateData"])
    state.health = check_health(cloud, group, state.target_group_arn, state.desired)
    state.in_service = len(state.health.in_service)
    state.healthy = state.in_service - len(state.health.unhealthy)
    return state


def release_of(data: dict[str, Any]) -> str | None:
    """The release version a launch template version's data names in its user data, or None."""
    named = releases.named_in(data.get("UserData"))
    version = named.get("version") if named else None
    return version if isinstance(version, str) else None


def live_color(weights: dict[str, int]) -> str:
    """The colour with the largest weight; blue when they are equal (a fresh service is blue)."""
    return max(COLORS, key=lambda color: weights.get(color, 0))


def describe(cloud: Cloud, service: ServiceConfig) -> ServiceState:
    """Read the service's listener, Auto Scaling groups, launch templates and target health."""
    switch, actions = find_switch(cloud, service)
    weights = elbv2.forward_weights(actions)
    groups = autoscaling.find_groups(cloud, [service.names(color).asg for color in COLORS])
    colors = {
        color: _color_state(cloud, service, color, groups.get(service.names(color).asg), weights)
        for color in COLORS
    }
    live = live_color({color: colors[color].weight for color in COLORS})
    standby = colors[other(live)]
    rollout = rollouts.read(cloud, switch.load_balancer_arn, service.name)
    return ServiceState(
        service.name, switch, colors[live], standby if standby.asg else None, rollout, colors
    )


def with_color(state: ServiceState, entry: ColorState) -> ServiceState:
    """`state` after this run changed one colour (the incoming one, which carries no traffic
    until the shift, so the live colour stays live)."""
    colors = {**state.colors, entry.color: entry}
    if entry.color == state.live.color:
        return replace(state, live=entry, colors=colors)
    return replace(state, standby=entry if entry.asg else None, colors=colors)


def routed(state: ServiceState, weights: dict[str, int]) -> ServiceState:
    """`state` after `route(state, weights)`: the colours' new weights, and the live colour
    chosen again."""
    known = state.colors or {each.color: each for each in (state.live, state.standby) if each}
    colors = {color: replace(entry, weight=weights.get(color, 0)) for color, entry in known.items()}
    live = live_color({color: entry.weight for color, entry in colors.items()})
    standby = colors.get(other(live))
    return replace(
        state,
        live=colors[live],
        standby=standby if standby and standby.asg else None,
        colors=colors,
    )


def color_from(
    color: str,
    health: Health,
    target_group: dict[str, Any],
    launch_template: tuple[str, int],
    ami: str,
    release: str | None = None,
) -> ColorState:
    """A colour as this run just made it: the group its health was read with, its target group,
    the launch template version, AMI and release it runs; it carries no traffic yet."""
    group = health.group or {}
    return ColorState(
        color,
        asg=group.get("AutoScalingGroupName"),
        ami=ami,
        release=release,
        launch_template_id=launch_template[0],
        launch_template_version=launch_template[1],
        target_group=target_group.get("TargetGroupName"),
        target_group_arn=target_group.get("TargetGroupArn"),
        desired=group.get("DesiredCapacity", 0),
        in_service=len(health.in_service),
        healthy=len(health.in_service) - len(health.unhealthy),
        health=health,
        group=health.group,
        target_group_info=target_group,
    )


def route(cloud: Cloud, state: ServiceState, weights: dict[str, int]) -> None:
    """Set the weights by colour; a colour without a target group is left out."""
    by_arn = {}
    for color_state in (state.live, state.standby):
        if color_state and color_state.target_group_arn:
            by_arn[color_state.target_group_arn] = weights.get(color_state.color, 0)
    elbv2.set_forward_weights(cloud, state.switch, by_arn)


def send_all_to(cloud: Cloud, service: ServiceConfig, color: str) -> ServiceState:
    """Send 100% of the service's traffic to `color`, which must have a group and a target group."""
    state = describe(cloud, service)
    colors = {entry.color: entry for entry in (state.live, state.standby) if entry}
    if color not in colors or not colors[color].target_group_arn:
        raise BakeError(
            f"service {service.name}: cannot send traffic to {color}: its Auto Scaling group "
            f"'{service.names(color).asg}' or target group "
            f"'{service.names(color).target_group}' does not exist"
        )
    route(cloud, state, {color: 100})
    return describe(cloud, service)


@dataclass(frozen=True)
class Decision:
    """What a swap does to the service: which colour takes the AMI, which colour stays as the
    rollback target, and whether it resumes the rollout the load balancer records."""

    incoming: str
    rollback: str
    resumes: Rollout | None = None
    replaces: Rollout | None = None

    def describe(self, ami: str) -> str:
        if self.resumes:
            return (
                f"resume run {self.resumes.run_id}'s rollout of {ami} to {self.incoming}, "
                f"{self.rollback} kept as the rollback target"
            )
        replaced = (
            f" (replacing run {self.replaces.run_id}'s unfinished rollout of {self.replaces.ami},"
            " which moved no traffic)"
            if self.replaces
            else ""
        )
        return f"roll {ami} out to {self.incoming}, {self.rollback} kept for rollback{replaced}"


def decide(state: ServiceState, ami: str, release: str | None = None) -> Decision:
    """Decide a swap of `ami` (with `release`, for `bake release`), once: an unfinished rollout of
    the same AMI (and release) is resumed with the colours it chose; one of another is replaced only
    while its incoming colour carries no traffic. An InputError, changing nothing, when the state
    allows no safe swap."""
    service, pending = state.service, state.rollout
    if pending and pending.pending:
        if pending.ami == ami and (release is None or pending.release == release):
            return Decision(pending.incoming, pending.rollback, resumes=pending)
        carried = state.weight(pending.incoming)
        if carried:
            raise InputError(
                f"service {service}: run {pending.run_id}'s rollout of {pending.ami} to "
                f"{pending.incoming} is unfinished and {pending.incoming} carries {carried}% of "
                f"the traffic; refusing to start a rollout of {ami}",
                hint=f"finish it with `bake swap {service} --ami {pending.ami}`, or send the "
                f"traffic back to {pending.rollback} with `bake rollback {service}`",
            )
        return Decision(pending.incoming, pending.rollback, replaces=pending)
    weights = {color: state.weight(color) for color in COLORS}
    if all(weights.values()):
        raise InputError(
            f"service {service}: both colours carry traffic (blue {weights['blue']}%, green "
            f"{weights['green']}%) and no unfinished rollout is recorded; refusing to swap",
            hint=f"send all traffic to one colour first (`bake rollback {service}` sends it to "
            f"{other(state.live.color)})",
        )
    return Decision(other(state.live.color), state.live.color)


def rollback_target(state: ServiceState) -> str | None:
    """The colour a rollback sends all traffic to: the one that ran the previously live AMI.

    That is the recorded rollout's rollback target while it is unfinished or after it went live.
    After a rollback the other colour runs the newer AMI, so going there is refused: it would be a
    roll forward. Without a record, the standby colour; None when there is none.
    """
    rollout, service = state.rollout, state.service
    if rollout and rollout.state == "rolled-back":
        raise InputError(
            f"service {service}: run {rollout.run_id}'s rollout of {rollout.ami} to "
            f"{rollout.incoming} was rolled back to {rollout.rollback} already; going to "
            f"{rollout.incoming} now would roll forward",
            hint=f"to roll forward on purpose, run `bake swap {service} --ami {rollout.ami}`",
        )
    if rollout and rollout.state in ("rolling", "live"):
        return rollout.rollback
    return state.standby.color if state.standby else None


def rollback(
    cloud: Cloud,
    service: ServiceConfig,
    state: ServiceState,
    console_line: Callable[[str], None],
) -> tuple[str, ServiceState]:
    """Send all traffic to the colour `rollback_target` names in `state` (as `describe` read it),
    scaled up first if it was scaled in, and only when it is healthy; that colour and the new
    state."""
    color = rollback_target(state)
    if color is None:
        missing = service.names(other(state.live.color)).asg
        raise BakeError(
            f"service {service.name}: nothing to roll back to: {state.live.color} is live and "
            f"the standby Auto Scaling group '{missing}' does not exist"
        )
    target = state.color(color)
    if target is None or target.group is None or not target.target_group_arn:
        raise BakeError(
            f"service {service.name}: cannot roll back to {color}: its Auto Scaling group "
            f"'{service.names(color).asg}' or target group "
            f"'{service.names(color).target_group}' does not exist"
        )
    started = time.monotonic()
    if target.weight == 100:
        console_line(f"{service.name}: {color} already carries all traffic; nothing moved")
        return color, state
    if target.desired == 0:
        capacity = scale_up_like(cloud, service, target, state.color(other(color)))
        console_line(f"{service.name}: {target.asg} was scaled in; scaling it to {capacity}")
        health = wait_healthy(
            cloud, target.asg or "", target.target_group_arn, capacity[1], service.health_timeout
        )
    else:
        health = check_health(cloud, target.group, target.target_group_arn, target.desired)
    if not health.ok or not health.in_service:
        raise BakeError(
            f"service {service.name}: refusing to roll back to {color}: it is not healthy "
            f"({health.describe()}); the traffic was left where it is",
            hint=f"bring '{target.asg}' back to health, then run bake rollback again",
        )
    new_state = send_all_to(cloud, service, color)
    console_line(
        f"{service.name}: 100% of traffic to {color} ({target.asg}, {target.ami}), "
        f"{other(color)} kept running, in {time.monotonic() - started:.1f}s"
    )
    return color, new_state


def sized_like(service: ServiceConfig, live: dict[str, Any] | None) -> tuple[int, int, int]:
    """The incoming colour's (min, desired, max): the service's, raised to what the live group
    runs now, so that an autoscaled service is never halved by a swap."""
    wanted = service.capacity
    if live is None:
        return wanted.min, wanted.desired, wanted.max
    return (
        max(wanted.min, live["MinSize"]),
        max(wanted.desired, live["DesiredCapacity"]),
        max(wanted.max, live["MaxSize"]),
    )


def scale_up_like(
    cloud: Cloud, service: ServiceConfig, target: ColorState, live: ColorState | None
) -> tuple[int, int, int]:
    """Give a scaled-in colour the service's capacity, raised to what the live colour runs."""
    capacity = sized_like(service, live.group if live else None)
    autoscaling.set_capacity(cloud, target.asg or "", capacity)
    return capacity


def wait_healthy(
    cloud: Cloud, asg: str, target_group_arn: str, expected: int, timeout: float
) -> Health:
    """Wait, at most `timeout` seconds, for `expected` InService instances, all healthy targets.
    The answer is the last look (the group and its targets' health, one call each when they are
    already there), with the group it read."""
    deadline = time.monotonic() + timeout
    group = autoscaling.wait_in_service(cloud, asg, expected, timeout)
    health = check_health(cloud, group, target_group_arn, expected)
    if len(health.in_service) < expected or health.ok:
        return health

    def healthy() -> bool:
        nonlocal health
        health = check_health(cloud, group, target_group_arn, expected)
        return health.ok

    remaining = max(1.0, deadline - time.monotonic())
    wait_until(healthy, remaining, interval=waiter_config(remaining)["Delay"])
    return health
