"""green-asg: the incoming colour's Auto Scaling group, on the new launch template version, healthy.

The incoming colour is the one the rollout record names ("green" is whichever colour is not live
when the rollout starts). An existing group is emptied before it takes the new version: changing a
group's launch template does not replace running instances. A colour that carries any traffic is
never emptied or moved: a resumed rollout whose incoming colour already took traffic leaves it as
it is, and the shift checks its health before each step.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from bake import bluegreen, signals
from bake.aws import autoscaling, elbv2
from bake.aws.errors import error_code
from bake.aws.session import Cloud
from bake.context import RunContext
from bake.errors import StageFailed
from bake.records import AlreadyLive, LaunchTemplateVersion, Observed, RolloutPlan, Standby
from bake.stages.base import Outcome, Stage
from bake.stages.rollout import settle

Capacity = tuple[int, int, int]


class GreenAsgStage(Stage):
    """Put the standby colour on the new version at the service's capacity, and wait for health."""

    name = "green-asg"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self._created_asg: str | None = None
        self._previous: tuple[str, str, str, Capacity] | None = None

    def run(self) -> Outcome:
        service, cloud = self.ctx.require_service(), self.ctx.target.cloud
        if already := self.ctx.records.get(AlreadyLive):
            return Outcome.skipped(f"{already.live_color} already runs it; standby untouched")
        plan = self.ctx.records.need(RolloutPlan, self.name)
        wanted = self.ctx.records.need(LaunchTemplateVersion, self.name)
        template_id, version = wanted.launch_template_id, wanted.launch_template_version
        state = self.observed()
        color = plan.rollout.incoming
        rollback = state.color(plan.rollout.rollback)
        capacity = bluegreen.sized_like(service, rollback.group if rollback else None)
        desired = capacity[1]
        asg, incoming = service.names(color).asg, state.color(color)
        if incoming and incoming.weight:
            return self._carrying(incoming, template_id, version)
        if incoming and incoming.group and _serves(cloud, incoming, template_id, version, desired):
            return Outcome.skipped(
                f"{asg} already runs version {version}, healthy",
                Standby(color, asg, incoming.target_group_arn or ""),
            )
        target_group = self._target_group(rollback, state.colors.get(color), color)
        target_group_arn = target_group["TargetGroupArn"]
        if incoming is None or incoming.group is None:
            self._create(rollback, color, target_group_arn, (template_id, version, capacity))
        else:
            self._replace(incoming, target_group_arn, (template_id, str(version), capacity))
        self.ctx.console.line(
            f"    {asg}: waiting up to {service.health_timeout}s for "
            f"{desired} healthy instances on version {version}"
        )
        health = bluegreen.wait_healthy(
            cloud, asg, target_group_arn, desired, service.health_timeout
        )
        if not health.ok:
            raise StageFailed(
                self.name,
                f"{asg} is not healthy after {service.health_timeout}s: {health.describe()}",
                hint="traffic was not moved; see the health check reasons above",
            )
        made = bluegreen.color_from(
            color,
            health,
            target_group,
            (template_id, version),
            plan.rollout.ami,
            plan.rollout.release,
        )
        return Outcome.done(
            f"{asg} runs version {version} with {len(health.in_service)} healthy instances",
            Standby(color, asg, target_group_arn),
            Observed(bluegreen.with_color(state, made)),
        )

    def _carrying(self, incoming: bluegreen.ColorState, template_id: str, version: int) -> Outcome:
        """A resumed rollout's incoming colour that already carries traffic is left as it is."""
        on_version = (
            incoming.launch_template_id == template_id
            and incoming.launch_template_version == version
        )
        if not on_version or not incoming.target_group_arn:
            raise StageFailed(
                self.name,
                f"{incoming.asg} carries {incoming.weight}% of the traffic but runs launch "
                f"template version {incoming.launch_template_version}, not {version}; refusing "
                "to move it",
                hint=f"send the traffic back with bake rollback {self.ctx.require_service().name}",
            )
        return Outcome.skipped(
            f"{incoming.asg} already runs version {version} and carries {incoming.weight}% of "
            "the traffic; left as it is",
            Standby(incoming.color, incoming.asg or "", incoming.target_group_arn),
        )

    def _target_group(
        self,
        rollback: bluegreen.ColorState | None,
        seen: bluegreen.ColorState | None,
        color: str,
    ) -> dict[str, Any]:
        """The incoming colour's target group, created like the rollback colour's when this
        run found none (it looked when it read the service)."""
        cloud, name = self.ctx.target.cloud, self.ctx.require_service().names(color).target_group
        if seen is not None and seen.target_group_info is not None:
            return seen.target_group_info
        found = None if seen is not None else elbv2.find_target_group(cloud, name)
        if found:
            return found
        if rollback is None or rollback.target_group_info is None:
            raise StageFailed(self.name, f"no target group '{name}', and none live to mirror")
        with signals.held():
            try:
                mirrored = elbv2.mirror_target_group(cloud, name, rollback.target_group_info)
            except ClientError as exc:  # made since this run looked
                if error_code(exc) != "DuplicateTargetGroupName":
                    raise
                mirrored = elbv2.find_target_group(cloud, name) or {}
                if not mirrored:
                    raise
                return mirrored
            self.ctx.record_resource("target-group", mirrored["TargetGroupArn"])
        return mirrored

    def _create(
        self,
        rollback: bluegreen.ColorState | None,
        color: str,
        target_group_arn: str,
        new: tuple[str, int, Capacity],
    ) -> None:
        """Create the incoming group like the live one (subnets, health checks, tags)."""
        service = self.ctx.require_service()
        asg = service.names(color).asg
        if rollback is None or rollback.group is None:
            raise StageFailed(self.name, f"no live Auto Scaling group to mirror as {asg}")
        template_id, version, capacity = new
        with signals.held():
            autoscaling.create_like(
                self.ctx.target.cloud,
                asg,
                rollback.group,
                launch_template_id=template_id,
                launch_template_version=version,
                capacity=capacity,
                target_group_arn=target_group_arn,
                tags={"bake:service": service.name, "bake:color": color},
            )
            self._created_asg = asg
            self.ctx.record_resource("auto-scaling-group", asg)

    def _replace(
        self, standby: bluegreen.ColorState, target_group_arn: str, new: tuple[str, str, Capacity]
    ) -> None:
        """Remember the standby group as it is, attach its target group, move it to `new`."""
        group, cloud = standby.group or {}, self.ctx.target.cloud
        asg, template = group["AutoScalingGroupName"], group.get("LaunchTemplate")
        if not template:
            raise StageFailed(self.name, f"{asg} does not run from a launch template")
        current = (group["MinSize"], group["DesiredCapacity"], group["MaxSize"])
        # The number it ran, not "$Latest": that would now mean the new version.
        version = str(standby.launch_template_version or template["Version"])
        self._previous = (asg, template["LaunchTemplateId"], version, current)
        autoscaling.ensure_target_group(cloud, group, target_group_arn)
        self._move(asg, *new)

    def _move(self, asg: str, template_id: str, version: str, capacity: Capacity) -> None:
        timeout = self.ctx.require_service().health_timeout
        cloud = self.ctx.target.cloud
        if not autoscaling.replace_instances(cloud, asg, template_id, version, capacity, timeout):
            raise StageFailed(self.name, f"the instances of {asg} did not terminate in {timeout}s")

    def undo(self) -> None:
        """Delete the group this stage created, or put the standby back as it was; the rollout
        then ended before any traffic moved."""
        changed = bool(self._created_asg or self._previous)
        if self._created_asg:
            autoscaling.delete_group(self.ctx.target.cloud, self._created_asg)
            self.ctx.console.line(f"    deleted {self._created_asg}")
        elif self._previous:
            asg, template_id, version, capacity = self._previous
            self._move(asg, template_id, version, capacity)
            self.ctx.console.line(f"    {asg} back on version {version}, capacity {capacity}")
        self._created_asg = self._previous = None
        plan = self.ctx.records.get(RolloutPlan)
        if changed and plan:
            settle(
                self.ctx,
                plan.rollout,
                plan.load_balancer_arn,
                "failed",
                "the incoming colour did not become healthy",
            )


def _serves(
    cloud: Cloud, standby: bluegreen.ColorState, template_id: str, version: int, desired: int
) -> bool:
    """Whether the standby already serves this version: healthy, every instance on its AMI."""
    if not (
        standby.launch_template_id == template_id
        and standby.launch_template_version == version
        and standby.desired == desired
        and standby.health.ok
    ):
        return False
    images = autoscaling.instance_images(cloud, standby.health.in_service)
    return set(images.values()) == {standby.ami}
