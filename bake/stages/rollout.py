"""rollout: decide the swap once, or resume the one the load balancer records, and record it
before anything changes.

Which colour takes the AMI and which stays as the rollback target is decided here only
(`bluegreen.decide`); later stages, and a rerun after a crash, follow the record.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from bake import bluegreen, releases, rollouts
from bake.aws import launch_templates
from bake.context import RunContext
from bake.errors import StageFailed
from bake.history import now
from bake.records import AlreadyLive, Observed, Released, RolloutPlan, VerifiedAmi
from bake.releases import Release
from bake.rollouts import Rollout
from bake.stages.base import Outcome, Stage


def new_version_data(
    source: dict[str, Any], ami: str, instance_type: str | None, release: Release | None = None
) -> dict[str, Any]:
    """The live version's complete data (as `launch_templates.sendable` gives it) with the new
    AMI, IMDSv2 required and a `bake:ami` tag; its other metadata options (a hop limit above 1 that
    containers on the instance need) are kept. With `release`, the user data names it (beside what
    else it held) and instances carry a `bake:release` tag; without, the release the source names
    is kept."""
    data = copy.deepcopy(source)
    if release is not None:
        data["UserData"] = releases.user_data_for(release, data.get("UserData"))
        data = launch_templates.with_tag(data, "bake:release", release.version)
    data["ImageId"] = ami
    data["MetadataOptions"] = {
        "HttpEndpoint": "enabled",
        **data.get("MetadataOptions", {}),
        "HttpTokens": "required",
    }
    if instance_type:
        data["InstanceType"] = instance_type
    return launch_templates.with_tag(data, "bake:ami", ami)


class RolloutStage(Stage):
    """Decide (or resume) the rollout, and write it down where any runner finds it."""

    name = "rollout"

    def run(self) -> Outcome:
        service, cloud = self.ctx.require_service(), self.ctx.target.cloud
        ami = self.ctx.records.need(VerifiedAmi, self.name).ami
        released = self.ctx.records.get(Released)
        release = released.release if released else None
        state = self.observed()
        decision = bluegreen.decide(state, ami, release.version if release else None)
        rollback = state.color(decision.rollback)
        template_id, source_version = self._source(rollback)
        source = launch_templates.version(cloud, template_id, source_version)
        sendable = launch_templates.sendable(cloud, source["LaunchTemplateData"])
        data = new_version_data(sendable, ami, service.instance_type, release)
        shipped = f"{ami} with release {release.version}" if release else ami
        if rollback and rollback.group and launch_templates.same_data(data, sendable):
            return Outcome.skipped(
                f"already live: {rollback.color} runs version {source['VersionNumber']} with "
                f"{shipped}; the standby is untouched",
                AlreadyLive(rollback.color, ami),
            )
        rollout = decision.resumes or Rollout(
            run_id=self.ctx.run_id,
            state="rolling",
            incoming=decision.incoming,
            ami=ami,
            rollback=decision.rollback,
            rollback_ami=rollback.ami if rollback else None,
            started=now(),
            release=release.version if release else bluegreen.release_of(data),
            rollback_release=rollback.release if rollback else None,
        )
        if decision.resumes is None:
            rollouts.write(cloud, state.switch.load_balancer_arn, service.name, rollout)
        self.ctx.history.record_rollout(rollout, service.name, self.ctx.run_id)
        self.ctx.console.line(f"    {decision.describe(shipped)}")
        return Outcome.done(
            decision.describe(shipped),
            RolloutPlan(rollout, state.switch.load_balancer_arn, template_id, source_version, data),
            Observed(replace(state, rollout=rollout)),
        )

    def _source(self, rollback: bluegreen.ColorState | None) -> tuple[str, int | str]:
        """The launch template id and version the rollback colour runs; the template's default
        when that colour has no group."""
        if rollback and rollback.launch_template_id and rollback.launch_template_version:
            return rollback.launch_template_id, rollback.launch_template_version
        service = self.ctx.require_service()
        template = launch_templates.find(self.ctx.target.cloud, service.launch_template)
        if template is None:
            raise StageFailed(self.name, f"no launch template named '{service.launch_template}'")
        return template["LaunchTemplateId"], "$Default"


def settle(
    ctx: RunContext, rollout: Rollout, load_balancer_arn: str, state: str, reason: str = ""
) -> Rollout:
    """Record that the rollout is now `state` (live, rolled-back, failed), on the service's load
    balancer and in history, with why when it did not go live."""
    service = ctx.require_service()
    ended = rollout.to(state)
    rollouts.write(ctx.target.cloud, load_balancer_arn, service.name, ended)
    ctx.history.record_rollout(ended, service.name, ctx.run_id, reason)
    return ended
