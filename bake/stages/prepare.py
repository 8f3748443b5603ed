"""prepare: make the target ready (the local target starts its cloud, builds or reuses its base
disk and seeds the blue environment) and check, changing nothing, what later stages rely on."""

from __future__ import annotations

from typing import Any

from bake import bluegreen
from bake.aws import alarms, images
from bake.errors import BakeError, InputError
from bake.records import Observed, VerifiedAmi
from bake.stages.base import Outcome, Stage


class Prepare(Stage):
    name = "prepare"

    def run(self) -> Outcome:
        ctx = self.ctx
        ctx.target.prepare(machines=ctx.service is not None)
        if ctx.service is None:
            return Outcome.done(f"{ctx.target.name} target ready")
        try:
            state = bluegreen.describe(ctx.target.cloud, ctx.service)
        except BakeError as exc:
            raise InputError(exc.message, hint=exc.hint) from None
        detail = f"{ctx.service.name}: {state.live.color} is live on {state.live.ami}"
        if missing := alarms.missing(ctx.target.cloud, ctx.service.alarms):
            raise InputError(
                f"service {ctx.service.name}: no CloudWatch alarm named "
                f"{', '.join(repr(name) for name in missing)} in {ctx.target.cloud.region}",
                hint="create the alarm first, or remove it from the service's alarms",
            )
        if ctx.command == "swap":
            return Outcome.done(detail, Observed(state), VerifiedAmi(self._verified_ami()))
        return Outcome.done(detail, Observed(state))

    def _verified_ami(self) -> str:
        ctx, service = self.ctx, self.ctx.require_service()
        ami = ctx.options.ami or images.published(ctx.target.cloud, service.image)
        if ami is None:
            raise InputError(
                f"image {service.image} has no published AMI to swap to",
                hint=f"run bake bake-and-swap {service.name}, or pass --ami",
            )
        described = images.describe(ctx.target.cloud, ami) or {}
        if images.tags_of(described).get("bake:verified") != "true":
            raise InputError(
                f"{ami} is not a verified AMI (tag bake:verified=true missing)",
                hint="only AMIs that passed bake verify can be swapped in",
            )
        if ctx.options.ami:
            self._ours(ami, described)
        return ami

    def _ours(self, ami: str, described: dict[str, Any]) -> None:
        """An AMI named on the command line must be of the service's image and of this account."""
        ctx, service = self.ctx, self.ctx.require_service()
        image = images.tags_of(described).get("bake:image")
        if image != service.image:
            raise InputError(
                f"{ami} is an AMI of image {image or '(none)'}, not of {service.image}, the image "
                f"of service {service.name}",
                hint=f"pass an AMI of {service.image}",
            )
        account = ctx.target.cloud.client("sts").get_caller_identity()["Account"]
        if described.get("OwnerId") != account:
            raise InputError(
                f"{ami} belongs to account {described.get('OwnerId')}, not to this one ({account})",
                hint="swap in AMIs this account baked; copy a shared one first",
            )
