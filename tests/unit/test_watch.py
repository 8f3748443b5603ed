"""Watching the new colour: alarms and target health during the shift and the soak, traffic back
to the rollback colour on trouble (only when that colour is healthy), and the standby afterwards."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bake import bluegreen, pipeline
from bake.cli import rollout_status
from bake.errors import BakeError, InputError, StageFailed
from bake.local.seed import ensure_seeded
from bake.records import VerifiedAmi
from bake.stages.green_asg import GreenAsgStage
from bake.stages.launch_template import LaunchTemplateStage
from bake.stages.prepare import Prepare
from bake.stages.rollback import Rollback
from bake.stages.rollout import RolloutStage
from bake.stages.shift import ShiftStage


@pytest.fixture
def seeded(cloud, config, base_ami):
    ensure_seeded(cloud, config, base_ami)
    return cloud


def _alarm(cloud, name, state="OK"):
    watch = cloud.client("cloudwatch")
    watch.put_metric_alarm(
        AlarmName=name,
        MetricName="HTTPCode_Target_5XX_Count",
        Namespace="AWS/ApplicationELB",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=10,
        ComparisonOperator="GreaterThanThreshold",
    )
    watch.set_alarm_state(AlarmName=name, StateValue=state, StateReason=f"set to {state}")


def _weights(cloud, service):
    state = bluegreen.describe(cloud, service)
    return {color: state.weight(color) for color in ("blue", "green")}


@pytest.fixture
def standby_ready(seeded, register_ami, make_config, make_context, run_stage):
    """Green on a new AMI, healthy, no traffic moved yet; `standby_ready(**service)` gives the
    context the shift runs in."""

    def make(**service):
        ctx = make_context(
            config=make_config(**service), records=(VerifiedAmi(register_ami("base-2")),)
        )
        for stage in (RolloutStage, LaunchTemplateStage, GreenAsgStage):
            run_stage(stage, ctx)
        return ctx

    return make


def test_a_swap_with_an_alarm_that_does_not_exist_stops_in_prepare(
    seeded, make_config, make_context
) -> None:
    _alarm(seeded, "demo-5xx")
    ctx = make_context(config=make_config(alarms=["demo-5xx", "demo-latency"]))

    with pytest.raises(InputError, match="no CloudWatch alarm named 'demo-latency'") as error:
        Prepare(ctx).run()

    assert error.value.exit_code == 2


def test_the_soak_watches_for_its_whole_length_then_the_rollout_is_live(
    seeded, standby_ready, shift_clock
) -> None:
    _alarm(seeded, "demo-5xx")
    ctx = standby_ready(soak=60, alarms=["demo-5xx"])
    looked = []
    shift_clock.on_sleep = lambda _: looked.append(_weights(seeded, ctx.service))

    pipeline._run_stage(ctx, "shift")

    assert sum(shift_clock.slept) == 60
    assert len(looked) == 12 and all(w == {"blue": 0, "green": 100} for w in looked)
    assert bluegreen.describe(seeded, ctx.service).rollout.state == "live"


@pytest.mark.parametrize("when", [1, 5, 12], ids=["first poll", "mid soak", "last poll"])
def test_an_alarm_during_the_soak_sends_traffic_back_and_is_named(
    seeded, standby_ready, shift_clock, when
) -> None:
    _alarm(seeded, "demo-5xx")
    ctx = standby_ready(soak=60, alarms=["demo-5xx"])

    def trouble(_seconds):
        if len(shift_clock.slept) == when:
            seeded.client("cloudwatch").set_alarm_state(
                AlarmName="demo-5xx", StateValue="ALARM", StateReason="5xx above 10"
            )

    shift_clock.on_sleep = trouble

    with pytest.raises(StageFailed, match=r"alarm demo-5xx is in ALARM \(5xx above 10\)"):
        pipeline._run_stage(ctx, "shift")

    assert _weights(seeded, ctx.service) == {"blue": 100, "green": 0}
    state = bluegreen.describe(seeded, ctx.service)
    assert state.rollout.state == "rolled-back"
    entry = ctx.history.rollout("demo")
    assert entry.rollout.state == "rolled-back"
    assert "alarm demo-5xx is in ALARM" in entry.reason
    (run,) = [run for run in ctx.history.runs() if run.run_id == ctx.run_id]
    shift = [stage for stage in run.stages if stage.name == "shift"][0]
    assert shift.status == "failed" and "alarm demo-5xx" in shift.detail
    shown = rollout_status(SimpleNamespace(history=ctx.history), state)
    assert "rolled back to blue: alarm demo-5xx is in ALARM (5xx above 10)" in shown["summary"]
    assert "`bake rollback demo` is refused" in shown["next"]


def test_an_alarm_before_the_first_step_moves_no_traffic(seeded, standby_ready) -> None:
    _alarm(seeded, "demo-5xx", state="ALARM")
    ctx = standby_ready(alarms=["demo-5xx"])

    with pytest.raises(StageFailed, match="alarm demo-5xx is in ALARM"):
        pipeline._run_stage(ctx, "shift")

    assert _weights(seeded, ctx.service) == {"blue": 100, "green": 0}
    assert ctx.history.rollout("demo").rollout.state == "failed"


def test_when_both_colours_are_unhealthy_the_weights_stay_and_the_error_says_so(
    seeded, standby_ready, shift_clock, target_health, capsys
) -> None:
    ctx = standby_ready(shift_steps=[50, 100], shift_interval=10)
    ctx.console.quiet = False

    def trouble(_seconds):
        target_health.fail("demo-green")
        target_health.fail("demo-blue")

    shift_clock.on_sleep = trouble

    with pytest.raises(StageFailed, match="green became unhealthy") as failure:
        pipeline._run_stage(ctx, "shift")

    assert _weights(seeded, ctx.service) == {"blue": 50, "green": 50}
    assert "blue is not healthy either" in failure.value.message
    assert "the weights were left as they are: green 50%, blue 50%" in failure.value.message
    assert bluegreen.describe(seeded, ctx.service).rollout.state == "rolling"


def test_scale_in_after_the_soak_and_a_rollback_scales_the_standby_up_first(
    seeded, standby_ready, make_context, run_stage
) -> None:
    ctx = standby_ready(standby_after_soak="scale-in")
    run_stage(ShiftStage, ctx)
    blue = bluegreen.describe(seeded, ctx.service).color("blue")
    assert (blue.group["MinSize"], blue.desired) == (0, 0)

    rollback = make_context(config=ctx.config, command="rollback")
    outcome = run_stage(Rollback, rollback)

    state = bluegreen.describe(seeded, ctx.service)
    assert outcome.status == "succeeded"
    assert (state.live.color, state.live.desired, state.live.healthy) == ("blue", 2, 2)
    assert _weights(seeded, ctx.service) == {"blue": 100, "green": 0}


def test_a_rollback_to_a_colour_that_does_not_get_healthy_moves_no_traffic(
    seeded, standby_ready, make_context, run_stage, target_health
) -> None:
    ctx = standby_ready(standby_after_soak="scale-in", health_timeout=1)
    run_stage(ShiftStage, ctx)
    target_health.fail("demo-blue")

    with pytest.raises(BakeError, match="refusing to roll back to blue: it is not healthy"):
        run_stage(Rollback, make_context(config=ctx.config, command="rollback"))

    assert _weights(seeded, ctx.service) == {"blue": 0, "green": 100}
