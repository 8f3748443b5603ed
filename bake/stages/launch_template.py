"""launch-template: a new version of the service's launch template that runs the verified AMI."""

from __future__ import annotations

from bake import signals
from bake.aws import launch_templates
from bake.context import RunContext
from bake.records import AlreadyLive, LaunchTemplateVersion, RolloutPlan
from bake.stages.base import Outcome, Stage


class LaunchTemplateStage(Stage):
    """Save the rollout's launch template data (the rollback colour's version with the new AMI)
    as a version, or find the version that already holds it."""

    name = "launch-template"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self._created: tuple[str, int] | None = None

    def run(self) -> Outcome:
        if already := self.ctx.records.get(AlreadyLive):
            return Outcome.skipped(f"{already.live_color} already runs {already.ami}")
        service, cloud = self.ctx.require_service(), self.ctx.target.cloud
        plan = self.ctx.records.need(RolloutPlan, self.name)
        template_id, ami = plan.launch_template_id, plan.rollout.ami
        if plan.rollout.release:
            ami = f"{ami} with release {plan.rollout.release}"
        existing = launch_templates.find_version_with(cloud, template_id, plan.data)
        if existing is not None:
            return Outcome.skipped(
                f"version {existing} of {service.launch_template} already runs {ami}",
                LaunchTemplateVersion(template_id, existing),
            )
        description = f"bake run {self.ctx.run_id}: {ami}"
        with signals.held():
            version = launch_templates.create_version(cloud, template_id, plan.data, description)
            self._created = (template_id, version)
            self.ctx.record_resource("launch-template-version", f"{template_id}:{version}")
        self.ctx.console.line(
            f"    {service.launch_template} version {version}: {ami} "
            f"(from version {plan.source_version})"
        )
        return Outcome.done(
            f"version {version} of {service.launch_template} runs {ami}",
            LaunchTemplateVersion(template_id, version),
        )

    def undo(self) -> None:
        """Delete the version this run created; nothing uses it yet."""
        if self._created:
            template_id, version = self._created
            launch_templates.delete_version(self.ctx.target.cloud, template_id, version)
            self._created = None
