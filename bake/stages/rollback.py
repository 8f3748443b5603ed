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
        before = bluegreen.describe(cloud, service)
        color, state = bluegreen.rollback(
            cloud, service, before, lambda text: self.ctx.console.line(f"    {text}")
        )
        rollout = before.rollout
        if rollout and rollout.state in ("rolling", "live"):
            reason = f"bake rollback (run {self.ctx.run_id})"
            settle(self.ctx, rollout, before.switch.load_balancer_arn, "rolled-back", reason)
        live = state.color(color)
        ami = live.ami if live else None
        release = live.release if live else None
        with_release = f" with release {release}" if release else ""
        return Outcome.done(
            f"{color} is live again on {ami}{with_release}", Traffic(color, ami, release)
        )
