"""shift: move the listener's traffic from the live colour to the standby, step by step.

The previously live group is left running untouched: it is what a rollback switches back to.
"""

from __future__ import annotations

import time

from bake import bluegreen
from bake.aws import autoscaling
from bake.context import RunContext
from bake.errors import StageFailed
from bake.records import AlreadyLive, Standby, Traffic
from bake.stages.base import Outcome, Stage

# Between steps; tests replace it so they do not wait.
sleep = time.sleep


class ShiftStage(Stage):
    """Standby/live weights follow `shift_steps` (10/90, 50/50, 100/0), health checked first."""

    name = "shift"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self._previous_live: str | None = None

    def run(self) -> Outcome:
        service, cloud = self.ctx.require_service(), self.ctx.target.cloud
        if already := self.ctx.records.get(AlreadyLive):
            return Outcome.skipped(f"{already.live_color} already takes all traffic with it")
        state = bluegreen.describe(cloud, service)
        standby = self.ctx.records.get(Standby)
        target = standby.color if standby else bluegreen.other(state.live.color)
        previous = bluegreen.other(target)
        colors = {entry.color: entry for entry in (state.live, state.standby) if entry}
        if target not in colors or not colors[target].target_group_arn:
            raise StageFailed(self.name, f"{target} has no Auto Scaling group or target group")
        previous_weight = colors[previous].weight if previous in colors else 0
        if colors[target].weight == 100 and previous_weight == 0:
            return Outcome.skipped(f"{target} already takes all traffic", Traffic(target))
        self._previous_live = previous
        for index, weight in enumerate(service.shift_steps):
            if index:
                sleep(service.shift_interval)
            self._check(colors[target])
            bluegreen.route(cloud, state, {target: weight, previous: 100 - weight})
            self.ctx.console.status(f"    traffic: {target} {weight}%, {previous} {100 - weight}%")
        self.ctx.console.line(f"    {target} takes 100% of traffic; {previous} kept running")
        return Outcome.done(f"{target} is live; {previous} kept for rollback", Traffic(target))

    def _check(self, target: bluegreen.ColorState) -> None:
        """Fail unless every InService instance of the target colour is a healthy target."""
        cloud = self.ctx.target.cloud
        group = autoscaling.find_group(cloud, target.asg or "")
        health = bluegreen.check_health(cloud, group, target.target_group_arn, target.desired)
        if not health.ok:
            raise StageFailed(
                self.name,
                f"{target.color} became unhealthy during the shift: {health.describe()}",
                hint=f"traffic goes back to {bluegreen.other(target.color)}",
            )

    def undo(self) -> None:
        """Send all traffic back to the colour that was live before this stage."""
        if self._previous_live:
            service = self.ctx.require_service()
            bluegreen.send_all_to(self.ctx.target.cloud, service, self._previous_live)
            self.ctx.console.line(f"    100% of traffic back to {self._previous_live}")
            self._previous_live = None
