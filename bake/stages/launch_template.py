"""launch-template: a new version of the service's launch template that runs the verified AMI."""

from __future__ import annotations

import copy
from typing import Any

from bake import bluegreen
from bake.aws import launch_templates
from bake.context import RunContext
from bake.errors import StageFailed
from bake.records import AlreadyLive, LaunchTemplateVersion, VerifiedAmi
from bake.stages.base import Outcome, Stage


def new_version_data(source: dict[str, Any], ami: str, instance_type: str | None) -> dict[str, Any]:
    """The live version's complete data with the new AMI, IMDSv2 required and a `bake:ami` tag."""
    data = copy.deepcopy(source)
    data["ImageId"] = ami
    data["MetadataOptions"] = {
        "HttpEndpoint": "enabled",
        **data.get("MetadataOptions", {}),
        "HttpTokens": "required",
    }
    if instance_type:
        data["InstanceType"] = instance_type
    return launch_templates.with_tag(data, "bake:ami", ami)


class LaunchTemplateStage(Stage):
    """Copy the live colour's pinned version, put the new AMI in it, and save it as a version."""

    name = "launch-template"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self._created: tuple[str, int] | None = None

    def _source(self) -> tuple[str, int | str, str | None]:
        """The launch template id and version the live colour runs, and that colour; the
        template's default and None when the live colour has no group."""
        service = self.ctx.require_service()
        cloud = self.ctx.target.cloud
        live = bluegreen.describe(cloud, service).live
        if live.launch_template_id and live.launch_template_version:
            return live.launch_template_id, live.launch_template_version, live.color
        template = launch_templates.find(cloud, service.launch_template)
        if template is None:
            raise StageFailed(self.name, f"no launch template named '{service.launch_template}'")
        return template["LaunchTemplateId"], "$Default", None

    def run(self) -> Outcome:
        service = self.ctx.require_service()
        cloud = self.ctx.target.cloud
        ami = self.ctx.records.need(VerifiedAmi, self.name).ami
        template_id, source_version, live_color = self._source()
        source = launch_templates.version(cloud, template_id, source_version)
        data = new_version_data(source["LaunchTemplateData"], ami, service.instance_type)
        if live_color and launch_templates.same_data(data, source["LaunchTemplateData"]):
            return Outcome.skipped(
                f"already live: {live_color} runs version {source['VersionNumber']} with {ami}",
                AlreadyLive(live_color, ami),
            )
        existing = launch_templates.find_version_with(cloud, template_id, data)
        if existing is not None:
            return Outcome.skipped(
                f"version {existing} of {service.launch_template} already runs {ami}",
                LaunchTemplateVersion(template_id, existing),
            )
        description = f"bake run {self.ctx.run_id}: {ami}"
        version = launch_templates.create_version(cloud, template_id, data, description)
        self._created = (template_id, version)
        self.ctx.record_resource("launch-template-version", f"{template_id}:{version}")
        self.ctx.console.line(
            f"    {service.launch_template} version {version}: {ami} "
            f"(from version {source['VersionNumber']})"
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
