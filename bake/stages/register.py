"""register: the verified AMI gets its lineage tags and becomes the image's published latest.
Only an image that passed verification with its current suites is ever published."""

from __future__ import annotations

from bake.aws import images
from bake.errors import StageFailed
from bake.stages.base import Outcome, Stage
from bake.stages.verify import latest_build, suite_files, suites_digest


class Register(Stage):
    name = "register"

    def run(self) -> Outcome:
        ctx, image = self.ctx, self.ctx.require_image()
        built = latest_build(ctx)
        kernel = ctx.outputs.get("kernel")
        if not ctx.outputs.get("verified"):
            subject = built.artifact or built.ami or ""
            check = ctx.history.verification(subject, suites_digest(suite_files(ctx)))
            if not check or not check["passed"]:
                raise StageFailed(
                    "register",
                    f"the newest build of {image.name} has not passed its suites",
                    hint=f"run bake verify {image.name}",
                )
            kernel = check["kernel"]
        cloud = ctx.target.cloud
        ami = ctx.target.ensure_ami(built)
        ctx.history.set_build_ami(image.name, built.digest, ami)
        wanted = images.lineage_tags(
            image=image.name,
            digest=built.digest,
            source_ami=built.source_ami,
            verified=True,
            kernel=kernel or "",
            run_id=ctx.run_id,
        )
        current = images.tags_of(images.describe(cloud, ami) or {})
        if images.published(cloud, image.name) == ami and current.get("bake:verified") == "true":
            return Outcome.skipped(f"{ami} is already the published latest", ami=ami)
        images.tag(cloud, ami, wanted)
        version = images.publish(cloud, image.name, ami)
        return Outcome.done(
            f"{ami} published as {images.parameter_name(image.name)} (version {version})",
            ami=ami,
            parameter=images.parameter_name(image.name),
            parameter_version=version,
        )
