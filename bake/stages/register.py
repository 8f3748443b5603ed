"""register: the verified AMI gets its lineage tags and becomes the image's published latest, and
its package list is published beside it as an SBOM. Only an image that passed verification with
its current suites is ever published."""

from __future__ import annotations

from datetime import UTC, datetime

from bake import sbom
from bake.aws import images, resource_shares
from bake.aws.session import Cloud
from bake.errors import StageFailed
from bake.inventory import Inventory
from bake.records import Built, Published, Verification, VerifiedAmi
from bake.stages.base import Outcome, Stage
from bake.stages.verify import latest_build, suite_files, suites_digest


class Register(Stage):
    name = "register"

    def run(self) -> Outcome:
        ctx, image = self.ctx, self.ctx.require_image()
        built = latest_build(ctx)
        kernel = self._verified_kernel(built.subject)
        cloud = ctx.target.cloud
        ami = ctx.target.ensure_ami(built)
        ctx.history.set_build_ami(image.name, built.digest, ami)
        parameter = images.parameter_name(image.name)
        current = images.tags_of(images.describe(cloud, ami) or {})
        if images.published(cloud, image.name) == ami and current.get("bake:verified") == "true":
            return Outcome.skipped(
                f"{ami} is already the published latest",
                VerifiedAmi(ami),
                Published(ami, parameter),
            )
        location = self._publish_sbom(built, ami, kernel)
        # What a planner on any runner compares: the suites it passed, where its packages are.
        extra = {"bake:suites": suites_digest(suite_files(ctx))}
        if location:
            extra["bake:sbom"] = location
        if user := ctx.target.login_user(ami, f"images.{image.name}"):
            extra[images.SSH_USER_TAG] = user  # what the images built on it log in as
        # The copies first: the home region's parameter, which rollouts follow, moves last.
        regions = image.aws.ami_regions
        copies = images.copies(cloud, ami, regions)
        missing = sorted(set(regions) - set(copies) - {cloud.region})
        if missing:
            raise StageFailed(
                "register",
                f"{ami} has no copy in {', '.join(missing)} (ami_regions)",
                hint=f"rebuild it: bake build {image.name} --rebuild",
            )
        for region, copy in sorted(copies.items()):
            there = cloud.in_region(region)
            images.tag_lineage(
                there, copy, built, verified=True, kernel=kernel, run_id=ctx.run_id, extra=extra
            )
            self._publish(there, copy)
            ctx.console.line(f"    {region}: {copy} published as {parameter}")
        images.tag_lineage(
            cloud, ami, built, verified=True, kernel=kernel, run_id=ctx.run_id, extra=extra
        )
        version = self._publish(cloud, ami)
        self._publish_in_consumer_accounts({**dict(sorted(copies.items())), cloud.region: ami})
        sbom_note = f", SBOM {location}" if location else ""
        copies_note = "".join(f", {region} {copy}" for region, copy in sorted(copies.items()))
        return Outcome.done(
            f"{ami} published as {parameter} (version {version}){copies_note}{sbom_note}",
            VerifiedAmi(ami),
            Published(ami, parameter, version),
        )

    def _publish(self, there: Cloud, ami: str) -> int:
        """The image's parameter in one region; with share_parameter = "ram", advanced and
        shared there with the accounts and organizations the AMI is shared with."""
        ctx, image = self.ctx, self.ctx.require_image()
        principals = [*image.aws.ami_users, *image.aws.ami_org_arns]
        sharing = bool(ctx.config.aws.share_parameter and principals)
        version = images.publish(there, image.name, ami, advanced=sharing)
        if sharing:
            arn = images.parameter_arn(there, image.name)
            shared = resource_shares.share(there, image.name, arn, principals)
            changes = "".join(
                f", {verb} {', '.join(whom)}"
                for verb, whom in (("added", shared.added), ("removed", shared.removed))
                if whom and not shared.created
            )
            ctx.console.line(
                f"    {there.region}: {arn} shared with {', '.join(principals)} "
                f"({shared.share_arn}{changes})"
            )
        return version

    def _publish_in_consumer_accounts(self, published: dict[str, str]) -> None:
        """The parameter written into each account the AMIs are shared with that has a role in
        consumer_roles, in every region the image is published in (region -> its AMI there)."""
        ctx, image = self.ctx, self.ctx.require_image()
        cloud = ctx.target.cloud
        for account in image.aws.ami_users:
            role = ctx.config.aws.consumer_roles.get(account)
            if not role:
                continue
            for region, ami in published.items():
                images.publish(cloud.in_region(region).as_role(role), image.name, ami)
            ctx.console.line(
                f"    account {account}: published as {images.parameter_name(image.name)} in "
                f"{', '.join(published)}"
            )

    def _publish_sbom(self, built: Built, ami: str, kernel: str) -> str | None:
        """Publish the build's package list as a CycloneDX SBOM beside the AMI and keep the list
        under the AMI's id too; where it is, or None when the build listed no packages (a build
        without provisioners)."""
        ctx = self.ctx
        known = Inventory(ctx.history.path)
        packages = known.packages(built.subject, ami)
        if packages is None:
            ctx.console.line(f"    {built.image}: the build listed no packages, so no SBOM")
            return None
        known.alias(built.subject, ami)
        document = sbom.to_cyclonedx(
            built.image, ami, built.digest, packages, kernel=kernel, timestamp=datetime.now(UTC)
        )
        return ctx.target.publish_sbom(built.image, ami, document)

    def _verified_kernel(self, subject: str) -> str:
        """The kernel the build was verified on, by this run or, with the same suites, earlier."""
        ctx = self.ctx
        verification = ctx.records.get(Verification)
        if verification is not None:
            return verification.kernel
        check = ctx.history.verification(subject, suites_digest(suite_files(ctx)))
        if check is None or not check.passed:
            raise StageFailed(
                "register",
                f"the newest build of {ctx.require_image().name} has not passed its suites",
                hint=f"run bake verify {ctx.require_image().name}",
            )
        return check.kernel
