"""shift: move the traffic from the rollback colour to the incoming one, step by step, then watch
the new colour for the soak before the rollout is live.

Before every step, and every few seconds between steps and during the soak, the incoming colour's
target health and the service's alarms are checked; trouble sends all traffic back to the rollback
colour, if that colour is healthy (if it is not, the weights stay as they are and the error says
so). The rollback colour is left running, untouched, unless `standby_after_soak = "scale-in"`.
"""

from __future__ import annotations

import time

from bake import bluegreen
from bake.aws import alarms, autoscaling
from bake.context import RunContext
from bake.errors import BakeError, StageFailed
from bake.records import AlreadyLive, Observed, RolloutPlan, Traffic
from bake.stages.base import Outcome, Stage
from bake.stages.rollout import settle

# Tests replace both so that they do not wait.
sleep = time.sleep
clock = time.monotonic

# How often health and alarms are checked while waiting between steps and during the soak.
POLL_SECONDS = 5.0


class ShiftStage(Stage):
    """Incoming/rollback weights follow `shift_steps` (10/90, 50/50, 100/0), then the soak."""

    name = "shift"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self._plan: RolloutPlan | None = None
        self._why = ""

    def run(self) -> Outcome:
        service, cloud = self.ctx.require_service(), self.ctx.target.cloud
        if already := self.ctx.records.get(AlreadyLive):
            return Outcome.skipped(f"{already.live_color} already takes all traffic with it")
        plan = self.ctx.records.need(RolloutPlan, self.name)
        target, previous = plan.rollout.incoming, plan.rollout.rollback
        state = self.observed()
        incoming = state.color(target)
        if incoming is None or not incoming.target_group_arn:
            raise StageFailed(self.name, f"{target} has no Auto Scaling group or target group")
        self._plan = plan
        # A resumed rollout goes on from the share the incoming colour already has.
        steps = [weight for weight in service.shift_steps if weight > state.share(target)]
        for index, weight in enumerate(steps):
            if index:
                self._watch(incoming, service.shift_interval)
            # The health this run read last is as fresh as a poll when it is younger than one.
            fresh = not index and time.monotonic() - incoming.health.read_at < POLL_SECONDS
            self._check(incoming, incoming.health if fresh else None)
            shares = {target: weight, previous: 100 - weight}
            bluegreen.route(cloud, state, shares)
            state = bluegreen.routed(state, shares)
            self.ctx.console.status(f"    traffic: {target} {weight}%, {previous} {100 - weight}%")
        if service.soak:
            self.ctx.console.line(f"    {target} takes 100% of traffic; soak for {service.soak}s")
        self._watch(incoming, service.soak)
        kept, seen = "kept running", Observed(state)
        if service.standby_after_soak == "scale-in":
            kept, seen = self._scale_in(state.color(previous)), Observed(None)
        settle(self.ctx, plan.rollout, plan.load_balancer_arn, "live")
        self._plan = None
        self.ctx.console.line(f"    {target} is live; {previous} {kept}")
        return Outcome.done(
            f"{target} is live; {previous} {kept} for rollback",
            Traffic(target, plan.rollout.ami, plan.rollout.release),
            seen,
        )

    def _watch(self, incoming: bluegreen.ColorState, seconds: float) -> None:
        """Check the incoming colour's health and the alarms every few seconds for `seconds`."""
        deadline = clock() + seconds
        while True:
            self._check(incoming)
            remaining = deadline - clock()
            if remaining <= 0:
                return
            sleep(min(POLL_SECONDS, remaining))

    def _check(
        self, incoming: bluegreen.ColorState, health: bluegreen.Health | None = None
    ) -> None:
        """Fail unless every InService instance of the incoming colour is a healthy target (as
        read now, or as `health` says when it was just read) and no alarm of the service is in
        ALARM."""
        service, cloud = self.ctx.require_service(), self.ctx.target.cloud
        if health is None:
            group = autoscaling.find_group(cloud, incoming.asg or "")
            health = bluegreen.check_health(
                cloud, group, incoming.target_group_arn, incoming.desired
            )
        back = f"traffic goes back to {bluegreen.other(incoming.color)}"
        if not health.ok:
            self._why = f"{incoming.color} became unhealthy: {health.describe()}"
            raise StageFailed(self.name, self._why, hint=back)
        if firing := alarms.firing(cloud, service.alarms):
            self._why = "; ".join(
                f"alarm {name} is in ALARM" + (f" ({reason})" if reason else "")
                for name, reason in sorted(firing.items())
            )
            raise StageFailed(self.name, self._why, hint=back)

    def _scale_in(self, previous: bluegreen.ColorState | None) -> str:
        if previous is None or previous.asg is None:
            return "has no group"
        group = previous.group or {}
        autoscaling.set_capacity(
            self.ctx.target.cloud, previous.asg, (0, 0, group.get("MaxSize", 0))
        )
        return "scaled in to 0 (bake rollback scales it up again)"

    def undo(self) -> None:
        """Send all traffic back to the rollback colour when it is healthy; else leave the
        weights as they are and say so."""
        plan, self._plan = self._plan, None
        if plan is None:
            return
        cloud, service = self.ctx.target.cloud, self.ctx.require_service()
        target, previous = plan.rollout.incoming, plan.rollout.rollback
        why = self._why or "cancelled"
        state = bluegreen.describe(cloud, service)
        if state.weight(target) == 0:
            settle(self.ctx, plan.rollout, plan.load_balancer_arn, "failed", why)
            return
        back = state.color(previous)
        health = (
            bluegreen.check_health(cloud, back.group, back.target_group_arn, back.desired)
            if back and back.group
            else None
        )
        if back is None or health is None or not health.ok:
            described = health.describe() if health else "no Auto Scaling group"
            raise BakeError(
                f"{previous} is not healthy either ({described}); the weights were left as they "
                f"are: {target} {state.weight(target)}%, {previous} {state.weight(previous)}%"
            )
        bluegreen.send_all_to(cloud, service, previous)
        settle(self.ctx, plan.rollout, plan.load_balancer_arn, "rolled-back", why)
        self.ctx.console.line(f"    100% of traffic back to {previous}")
