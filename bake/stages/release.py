"""release: pack the application, keep it in the service's release store with its sha256, and hand
the rollout the live colour's AMI, so that the swap changes the application alone.

A version stored once keeps its content: the same content again is reused, other content under a
stored version is refused (exit 2) before anything changes.
"""

from __future__ import annotations

from bake import releases
from bake.aws import objects
from bake.errors import InputError, StageFailed
from bake.records import Released, VerifiedAmi
from bake.stages.base import Outcome, Stage


class ReleaseStage(Stage):
    name = "release"

    def run(self) -> Outcome:
        ctx, service = self.ctx, self.ctx.require_service()
        releases.check_image_pulls(ctx.config, service)
        path = ctx.options.release_path
        if path is None:
            raise StageFailed(self.name, "no release was given")
        packed = releases.pack(path)
        version = releases.check_version(ctx.options.release_version or packed.sha256[:12])
        live = self.observed().live
        if not live.ami:
            raise StageFailed(
                self.name,
                f"{live.color}, the live colour of {service.name}, runs no AMI for a release",
                hint=f"swap an image in first: bake swap {service.name}",
            )
        store = ctx.target.release_store(service)
        bucket, key = releases.store_key(store, service.name, version)
        cloud = ctx.target.cloud
        stored = objects.stored_sha256(cloud, bucket, key)
        if stored is not None and stored != packed.sha256:
            raise InputError(
                f"release {version} of {service.name} is stored already with other content "
                f"(sha256 {stored[:12]}, this one {packed.sha256[:12]}); releases are immutable",
                hint="give this content a version of its own (--version)",
            )
        if stored is None:
            objects.put(cloud, bucket, key, packed.data, packed.sha256)
        release = releases.Release(
            service.name,
            version,
            packed.sha256,
            packed.size,
            f"s3://{bucket}/{key}",
            ctx.target.release_endpoint(),
        )
        releases.ReleaseBook(ctx.history.path).record(release, ctx.run_id)
        kept = "kept already" if stored else "stored"
        detail = (
            f"release {version} ({packed.files} files, {packed.size} bytes, sha256 "
            f"{packed.sha256[:12]}) {kept} at {release.location}; {live.color} runs {live.ami}"
        )
        ctx.console.line(f"    {detail}")
        return Outcome.done(detail, Released(release), VerifiedAmi(live.ami))
