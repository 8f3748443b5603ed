"""retire: deregister an image's old AMIs and delete their snapshots, keeping the newest verified
ones and every AMI in use. With `dry_run`, only say what would happen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bake import retire
from bake.aws.session import Cloud
from bake.records import Record
from bake.stages.base import Outcome, Stage


@dataclass(frozen=True)
class Retirement(Record):
    """What was decided for each AMI of the image, newest first."""

    decisions: tuple[retire.Decision, ...]

    def outputs(self) -> dict[str, Any]:
        return {"decisions": [decision.to_dict() for decision in self.decisions]}


class Retire(Stage):
    name = "retire"

    def run(self) -> Outcome:
        ctx, image = self.ctx, self.ctx.require_image()
        keep, dry_run = ctx.options.keep, ctx.options.dry_run
        home = ctx.target.cloud
        regions = [home.region, *(r for r in image.aws.ami_regions if r != home.region)]
        clouds = {region: home.in_region(region) for region in regions}
        roles = ctx.config.aws.consumer_roles
        grace = timedelta(seconds=ctx.config.aws.retire_grace)

        def consumers(region: str) -> dict[str, Cloud | None]:
            return {
                account: clouds[region].as_role(roles[account]) if account in roles else None
                for account in image.aws.ami_users
            }

        decisions = [
            decision
            for region in regions
            for decision in retire.decide(
                clouds[region], image.name, keep, consumers(region), grace
            )
        ]
        doomed = [decision for decision in decisions if not decision.keep]
        for decision in decisions:
            verb = "keep" if decision.keep else ("would retire" if dry_run else "retire")
            if decision.disable:
                verb = "would disable" if dry_run else "disable"
            where = "" if decision.region == home.region else f" in {decision.region}"
            ctx.console.line(
                f"    {verb} {decision.ami}{where} ({decision.created}): {decision.reason}"
            )
        if not dry_run:
            for decision in decisions:
                if decision.disable:
                    ctx.record_resource("disabled-ami", decision.ami)
                    retire.disable(clouds[decision.region], decision)
            for decision in doomed:
                ctx.record_resource("retired-ami", decision.ami)
                retire.retire(clouds[decision.region], decision)
                ctx.target.discard(decision.ami)
        verb = "would retire" if dry_run else "retired"
        return Outcome.done(
            f"{verb} {len(doomed)} of {len(decisions)} AMIs of {image.name}",
            Retirement(tuple(decisions)),
        )
