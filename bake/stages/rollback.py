"""rollback: send the service's traffic back to its standby colour, which is still running."""

from __future__ import annotations

from bake import bluegreen
from bake.records import Traffic
from bake.stages.base import Outcome, Stage


class Rollback(Stage):
    name = "rollback"

    def run(self) -> Outcome:
        service = self.ctx.require_service()
        state = bluegreen.rollback(
            self.ctx.target.cloud, service, lambda text: self.ctx.console.line(f"    {text}")
        )
        return Outcome.done(
            f"{state.live.color} is live again on {state.live.ami}",
            Traffic(state.live.color, state.live.ami),
        )
