"""retire: deregister an image's old AMIs and delete their snapshots, keeping the newest verified
ones and every AMI in use. With `dry_run`, only say what would happen."""

from __future__ import annotations

from bake import retire
from bake.stages.base import Outcome, Stage


class Retire(Stage):
    name = "retire"

    def run(self) -> Outcome:
        ctx, image = self.ctx, self.ctx.require_image()
        keep = int(ctx.options.get("keep", 3))
        decisions = retire.decide(ctx.target.cloud, image.name, keep)
        doomed = [decision for decision in decisions if not decision.keep]
        for decision in decisions:
            verb = (
                "keep"
                if decision.keep
                else ("would retire" if ctx.options.get("dry_run") else "retire")
            )
            ctx.console.line(f"    {verb} {decision.ami} ({decision.created}): {decision.reason}")
        if not ctx.options.get("dry_run"):
            for decision in doomed:
                ctx.record_resource("retired-ami", decision.ami)
                retire.retire(ctx.target.cloud, decision)
                ctx.target.discard(decision.ami)
        verb = "would retire" if ctx.options.get("dry_run") else "retired"
        return Outcome.done(
            f"{verb} {len(doomed)} of {len(decisions)} AMIs of {image.name}",
            decisions=[decision.to_dict() for decision in decisions],
        )
