"""rollback: send the service's traffic back to the colour that ran the previously live AMI."""

from __future__ import annotations

from bake import bluegreen
from bake.records import Traffic
from bake.stages.base import Outcome, Stage
from bake.stages.rollout import settle


class Rollback(Stage):
    name = "rollback"

    def run(self) -> Outcome:
        service, cloud = self.ctx.require_service(), self.ctx.target.cloud
        rollout = bluegreen.describe(cloud, service).rollout
        color, state = bluegreen.rollback(
            cloud, service, lambda text: self.ctx.console.line(f"    {text}")
        )
        if rollout and rollout.state in ("rolling", "live"):
            settle(self.ctx, rollout, "rolled-back", f"bake rollback (run {self.ctx.run_id})")
        live = state.color(color)
        ami = live.ami if live else None
        return Outcome.done(f"{color} is live again on {ami}", Traffic(color, ami))
