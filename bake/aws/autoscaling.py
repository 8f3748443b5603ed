"""Auto Scaling groups: find, create, resize, repoint and wait on them.

The Auto Scaling API has no boto3 waiters, so its waits go through `wait_until`, a bounded poll.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import WaiterError

from bake.aws import shapes
from bake.aws.session import Cloud
from bake.aws.tags import tags_of
from bake.polling import wait_until, waiter_config


def find_group(cloud: Cloud, name: str) -> dict[str, Any] | None:
    """The Auto Scaling group called `name`, or None."""
    groups = cloud.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
        "AutoScalingGroups"
    ]
    return groups[0] if groups else None


def find_groups(cloud: Cloud, names: list[str]) -> dict[str, dict[str, Any]]:
    """The groups among `names` that exist, by name, in one call."""
    groups = cloud.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=names)
    return {group["AutoScalingGroupName"]: group for group in groups["AutoScalingGroups"]}


def in_service(group: dict[str, Any]) -> list[str]:
    """Ids of the group's instances that are InService."""
    return [
        instance["InstanceId"]
        for instance in group.get("Instances", [])
        if instance["LifecycleState"] == "InService"
    ]


def create_group(
    cloud: Cloud,
    name: str,
    *,
    launch_template_id: str,
    launch_template_version: int,
    capacity: tuple[int, int, int],
    subnets: str,
    target_group_arns: list[str],
    health_check_type: str = "ELB",
    health_check_grace_period: int = 300,
    tags: dict[str, str] | None = None,
    **settings: Any,
) -> None:
    """Create a group pinned to one launch template version (never $Latest); `settings` are
    further CreateAutoScalingGroup fields (termination policies, lifecycle hooks, ...)."""
    cloud.client("autoscaling").create_auto_scaling_group(
        **_on_version(name, launch_template_id, launch_template_version, capacity),
        VPCZoneIdentifier=subnets,
        TargetGroupARNs=target_group_arns,
        HealthCheckType=health_check_type,
        HealthCheckGracePeriod=health_check_grace_period,
        Tags=[
            {"Key": key, "Value": value, "PropagateAtLaunch": True}
            for key, value in (tags or {}).items()
        ],
        **settings,
    )


def set_launch_template(
    cloud: Cloud,
    name: str,
    launch_template_id: str,
    launch_template_version: int | str,
    capacity: tuple[int, int, int],
) -> None:
    """Point a group at a launch template version and give it a capacity."""
    cloud.client("autoscaling").update_auto_scaling_group(
        **_on_version(name, launch_template_id, launch_template_version, capacity)
    )


def set_capacity(cloud: Cloud, name: str, capacity: tuple[int, int, int]) -> None:
    """Give a group this (min, desired, max)."""
    minimum, desired, maximum = capacity
    cloud.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName=name, MinSize=minimum, DesiredCapacity=desired, MaxSize=maximum
    )


def _on_version(
    name: str, launch_template_id: str, version: int | str, capacity: tuple[int, int, int]
) -> dict[str, Any]:
    """The request fields that pin a group to a launch template version at a capacity."""
    minimum, desired, maximum = capacity
    return {
        "AutoScalingGroupName": name,
        "LaunchTemplate": {"LaunchTemplateId": launch_template_id, "Version": str(version)},
        "MinSize": minimum,
        "DesiredCapacity": desired,
        "MaxSize": maximum,
    }


def scale_to_zero(cloud: Cloud, name: str, timeout: float) -> bool:
    """Empty a group and wait until its instances are terminated; says whether they are gone.

    Changing a group's launch template does not replace running instances, so a group that is about
    to run a new image is emptied first.
    """
    group = find_group(cloud, name)
    if group is None:
        return True
    instance_ids = [instance["InstanceId"] for instance in group.get("Instances", [])]
    cloud.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName=name, MinSize=0, DesiredCapacity=0
    )
    started = time.monotonic()
    if instance_ids:
        try:
            cloud.client("ec2").get_waiter("instance_terminated").wait(
                InstanceIds=instance_ids, WaiterConfig=waiter_config(timeout)
            )
        except WaiterError:
            return False
    remaining = max(1.0, timeout - (time.monotonic() - started))
    return wait_until(lambda: not (find_group(cloud, name) or {}).get("Instances"), remaining)


def ensure_target_group(cloud: Cloud, group: dict[str, Any], target_group_arn: str) -> bool:
    """Attach a target group to a group unless it already is; says whether it attached it.

    An attached group registers its instances in the target group as they launch and deregisters
    them as they terminate, on AWS and on moto alike.
    """
    if target_group_arn in group.get("TargetGroupARNs", []):
        return False
    cloud.client("autoscaling").attach_load_balancer_target_groups(
        AutoScalingGroupName=group["AutoScalingGroupName"], TargetGroupARNs=[target_group_arn]
    )
    return True


def wait_in_service(cloud: Cloud, name: str, count: int, timeout: float) -> dict[str, Any] | None:
    """Wait until `count` instances of the group are InService; the group as last read (with
    fewer InService on timeout), or None when there is no such group."""
    found: dict[str, Any] | None = None

    def ready() -> bool:
        nonlocal found
        found = find_group(cloud, name)
        return len(in_service(found)) >= count if found else False

    wait_until(ready, timeout, interval=5.0)
    return found


def delete_group(cloud: Cloud, name: str) -> None:
    """Delete a group and terminate its instances."""
    cloud.client("autoscaling").delete_auto_scaling_group(
        AutoScalingGroupName=name, ForceDelete=True
    )


def replace_instances(
    cloud: Cloud,
    name: str,
    launch_template_id: str,
    launch_template_version: int | str,
    capacity: tuple[int, int, int],
    timeout: float,
) -> bool:
    """Empty the group, then run it on this version at this capacity; False if the old instances
    outlived `timeout` (the group is then left empty)."""
    if not scale_to_zero(cloud, name, timeout):
        return False
    set_launch_template(cloud, name, launch_template_id, launch_template_version, capacity)
    return True


def as_hook(cloud: Cloud, hook: dict[str, Any]) -> dict[str, Any]:
    """A described lifecycle hook as a group's creation (and PutLifecycleHook, with the group's
    name) takes it: the members botocore's model gives the request, each with a value."""
    return shapes.for_request(
        cloud.client("autoscaling"),
        "CreateAutoScalingGroup",
        hook,
        member="LifecycleHookSpecificationList",
        drop_empty=True,
    )


def as_policy(cloud: Cloud, policy: dict[str, Any]) -> dict[str, Any]:
    """A described scaling policy as PutScalingPolicy takes it, without the group's name."""
    return shapes.for_request(
        cloud.client("autoscaling"),
        "PutScalingPolicy",
        policy,
        without=("AutoScalingGroupName",),
        drop_empty=True,
    )


def lifecycle_hooks(cloud: Cloud, name: str) -> list[dict[str, Any]]:
    """The group's lifecycle hooks, as PutLifecycleHook takes them (without the group)."""
    hooks = cloud.client("autoscaling").describe_lifecycle_hooks(AutoScalingGroupName=name)
    return [as_hook(cloud, hook) for hook in hooks["LifecycleHooks"]]


def scaling_policies(cloud: Cloud, name: str) -> list[dict[str, Any]]:
    """The group's scaling policies, as PutScalingPolicy takes them (without the group)."""
    paginator = cloud.client("autoscaling").get_paginator("describe_policies")
    return [
        as_policy(cloud, policy)
        for page in paginator.paginate(AutoScalingGroupName=name)
        for policy in page["ScalingPolicies"]
    ]


def create_like(
    cloud: Cloud,
    name: str,
    source: dict[str, Any],
    *,
    launch_template_id: str,
    launch_template_version: int,
    capacity: tuple[int, int, int],
    target_group_arn: str,
    tags: dict[str, str],
) -> None:
    """Create a group like `source`: its subnets, health checks, termination policies, tags
    (`tags` laid over), lifecycle hooks and scaling policies."""
    source_name = source["AutoScalingGroupName"]
    inherited = {key: value for key, value in tags_of(source).items() if not key.startswith("aws:")}
    hooks = lifecycle_hooks(cloud, source_name)
    create_group(
        cloud,
        name,
        launch_template_id=launch_template_id,
        launch_template_version=launch_template_version,
        capacity=capacity,
        subnets=source["VPCZoneIdentifier"],
        target_group_arns=[target_group_arn],
        health_check_type=source.get("HealthCheckType", "ELB"),
        health_check_grace_period=source.get("HealthCheckGracePeriod", 300),
        tags={**inherited, **tags},
        TerminationPolicies=source.get("TerminationPolicies") or ["Default"],
        LifecycleHookSpecificationList=hooks,
    )
    client = cloud.client("autoscaling")
    present = (
        {hook["LifecycleHookName"] for hook in lifecycle_hooks(cloud, name)} if hooks else set()
    )
    for hook in hooks:  # hooks given at creation are kept by AWS; put any that were not
        if hook["LifecycleHookName"] not in present:
            client.put_lifecycle_hook(AutoScalingGroupName=name, **hook)
    for policy in scaling_policies(cloud, source_name):
        client.put_scaling_policy(AutoScalingGroupName=name, **policy)


def instance_images(cloud: Cloud, instance_ids: list[str]) -> dict[str, str]:
    """Instance id -> the AMI it was launched from, as EC2 reports it.

    An ASG's per-instance launch template version is not trustworthy on moto (it reports the
    template's default version), so "which image does this instance run" is asked of EC2.
    """
    if not instance_ids:
        return {}
    reservations = cloud.client("ec2").describe_instances(InstanceIds=instance_ids)["Reservations"]
    return {
        instance["InstanceId"]: instance["ImageId"]
        for reservation in reservations
        for instance in reservation["Instances"]
    }
