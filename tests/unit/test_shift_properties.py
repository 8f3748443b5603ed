"""The shift as a property: for any steps that rise to 100, every weight the listener is given
sums to 100, the incoming colour's share only rises, ends at 100, and the colour `bake status` calls
live is the one with the most traffic at every step."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bake import bluegreen
from bake.local.seed import ensure_seeded
from bake.records import RolloutPlan, VerifiedAmi
from bake.rollouts import Rollout
from bake.stages.green_asg import GreenAsgStage
from bake.stages.launch_template import LaunchTemplateStage
from bake.stages.rollout import RolloutStage
from bake.stages.shift import ShiftStage

rising_to_100 = st.lists(st.integers(min_value=1, max_value=99), max_size=4, unique=True).map(
    lambda steps: [*sorted(steps), 100]
)


def _weights(cloud, service) -> dict[str, int]:
    state = bluegreen.describe(cloud, service)
    return {entry.color: entry.weight for entry in (state.live, state.standby) if entry}


def test_every_shift_step_sums_to_100_rises_and_ends_at_100(
    cloud, config, base_ami, register_ami, make_context, run_stage, shift_clock
) -> None:
    ensure_seeded(cloud, config, base_ami)
    ctx = make_context(records=(VerifiedAmi(register_ami("goldenbake-base-2")),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)
    run_stage(GreenAsgStage, ctx)

    @settings(max_examples=25, suppress_health_check=list(HealthCheck))
    @given(steps=rising_to_100)
    def check(steps: list[int]) -> None:
        service = config.services["demo"].model_copy(update={"shift_steps": steps})
        before = bluegreen.describe(cloud, service)
        incoming, outgoing = before.standby.color, before.live.color
        seen: list[dict[str, int]] = []
        shift_clock.on_sleep = lambda _seconds: seen.append(_weights(cloud, service))
        rollout = Rollout("run", "rolling", incoming, "ami-1", outgoing, None, "2026-11-27")
        stage_ctx = make_context(
            records=(RolloutPlan(rollout, before.switch.load_balancer_arn, "lt-0", 1, {}),)
        )
        stage_ctx.service = service
        run_stage(ShiftStage, stage_ctx)
        seen.append(_weights(cloud, service))

        assert [weights[incoming] for weights in seen] == steps
        assert all(weights[incoming] + weights[outgoing] == 100 for weights in seen)
        assert all(a < b for a, b in pairwise(weights[incoming] for weights in seen))
        assert seen[-1] == {incoming: 100, outgoing: 0}
        for weights in seen:
            heavier = max(weights.values())
            carriers = {color for color, weight in weights.items() if weight == heavier}
            assert bluegreen.live_color(weights) == (
                "blue" if len(carriers) > 1 else carriers.pop()
            )

    check()


@given(blue=st.integers(min_value=0, max_value=100), green=st.integers(min_value=0, max_value=100))
def test_the_live_colour_is_the_heavier_one_blue_on_a_tie(blue: int, green: int) -> None:
    live = bluegreen.live_color({"blue": blue, "green": green})
    assert live == ("green" if green > blue else "blue")
    assert bluegreen.live_color({"green": green, "blue": blue}) == live
