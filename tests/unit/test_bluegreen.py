"""Reading a service's blue/green state from the cloud, and rolling back."""

from __future__ import annotations

import pytest

from bake import bluegreen
from bake.aws import elbv2
from bake.errors import BakeError, InputError
from bake.local.seed import ensure_seeded
from bake.records import VerifiedAmi
from bake.stages.green_asg import GreenAsgStage
from bake.stages.launch_template import LaunchTemplateStage
from bake.stages.rollback import Rollback
from bake.stages.rollout import RolloutStage
from bake.stages.shift import ShiftStage

COLOR_KEYS = {
    "color",
    "asg",
    "ami",
    "release",
    "launch_template_version",
    "target_group",
    "target_group_arn",
    "weight",
    "desired",
    "in_service",
    "healthy",
}


@pytest.fixture
def seeded(cloud, config, base_ami):
    ensure_seeded(cloud, config, base_ami)
    return cloud


@pytest.fixture
def with_green(seeded, register_ami, make_context, run_stage):
    """Blue live, green standby on a new AMI (no traffic moved); gives the new AMI."""
    ami = register_ami("goldenbake-base-2")
    ctx = make_context(records=(VerifiedAmi(ami),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)
    run_stage(GreenAsgStage, ctx)
    return ami


def _set_weights(cloud, service, blue, green):
    state = bluegreen.describe(cloud, service)
    bluegreen.route(cloud, state, {"blue": blue, "green": green})


def test_describe_a_freshly_seeded_service(seeded, config, base_ami):
    service = config.service("demo")

    state = bluegreen.describe(seeded, service)

    blue_tg = elbv2.find_target_group(seeded, "demo-blue")["TargetGroupArn"]
    assert state.to_dict() == {
        "service": "demo",
        "live": {
            "color": "blue",
            "asg": "demo-blue",
            "ami": base_ami,
            "release": None,
            "launch_template_version": 1,
            "target_group": "demo-blue",
            "target_group_arn": blue_tg,
            "weight": 100,
            "desired": 2,
            "in_service": 2,
            "healthy": 2,
        },
        "standby": None,
        "rollout": None,
    }


def test_describe_gives_the_standby_with_the_same_keys(with_green, seeded, config, base_ami):
    state = bluegreen.describe(seeded, config.service("demo")).to_dict()

    assert set(state) == {"service", "live", "standby", "rollout"}
    assert set(state["live"]) == set(state["standby"]) == COLOR_KEYS
    assert state["rollout"] == {
        **state["rollout"],
        "state": "rolling",
        "incoming": "green",
        "ami": with_green,
        "rollback": "blue",
        "rollback_ami": base_ami,
    }
    assert (state["live"]["color"], state["live"]["ami"]) == ("blue", base_ami)
    assert state["standby"] == {
        **state["standby"],
        "color": "green",
        "asg": "demo-green",
        "ami": with_green,
        "launch_template_version": 2,
        "target_group": "demo-green",
        "weight": 0,
        "in_service": 2,
        "healthy": 2,
    }


@pytest.mark.parametrize(
    ("blue", "green", "live"),
    [(100, 0, "blue"), (30, 70, "green"), (0, 100, "green"), (50, 50, "blue"), (90, 10, "blue")],
)
def test_live_is_the_colour_with_the_larger_weight(with_green, seeded, config, blue, green, live):
    service = config.service("demo")
    _set_weights(seeded, service, blue, green)

    state = bluegreen.describe(seeded, service)

    assert state.live.color == live
    assert state.standby.color == bluegreen.other(live)
    assert {state.live.weight, state.standby.weight} == {blue, green}


def test_describe_counts_unhealthy_targets(with_green, seeded, config, target_health):
    target_health.fail("demo-green")

    state = bluegreen.describe(seeded, config.service("demo"))

    assert (state.standby.in_service, state.standby.healthy) == (2, 0)
    assert (state.live.in_service, state.live.healthy) == (2, 2)
    assert "Target.FailedHealthChecks" in state.standby.health.describe()


def test_describe_without_a_load_balancer_says_what_to_do(cloud, config):
    with pytest.raises(BakeError) as failure:
        bluegreen.describe(cloud, config.service("demo"))

    assert failure.value.message == "service demo: no load balancer named 'demo' in us-east-1"
    assert "bake local up" in failure.value.hint


def test_describe_without_the_listener_port_names_it(seeded, make_config):
    service = make_config(listener_port=8443).service("demo")

    with pytest.raises(BakeError, match="load balancer 'demo' has no listener on port 8443"):
        bluegreen.describe(seeded, service)


def test_rollback_sends_all_traffic_back_and_refuses_to_roll_forward_after(
    with_green, seeded, config, make_context, run_stage, base_ami
):
    service = config.service("demo")
    ctx = make_context(records=(VerifiedAmi(with_green),))
    for stage in (RolloutStage, LaunchTemplateStage, GreenAsgStage, ShiftStage):
        run_stage(stage, ctx)
    assert bluegreen.describe(seeded, service).live.color == "green"
    rollback_ctx = make_context(command="rollback")

    outcome = run_stage(Rollback, rollback_ctx)

    state = bluegreen.describe(seeded, service)
    assert outcome.detail == f"blue is live again on {base_ami}"
    assert (state.live.color, state.live.weight, state.live.ami) == ("blue", 100, base_ami)
    assert (state.standby.color, state.standby.weight, state.standby.ami) == (
        "green",
        0,
        with_green,
    )
    assert state.rollout.state == "rolled-back"
    with pytest.raises(InputError, match="would roll forward"):
        run_stage(Rollback, make_context(command="rollback"))
    assert bluegreen.describe(seeded, service).live.color == "blue"


def test_rollback_refuses_without_a_standby(seeded, config):
    service = config.service("demo")

    with pytest.raises(BakeError, match="nothing to roll back to.*'demo-green' does not exist"):
        bluegreen.rollback(seeded, service, bluegreen.describe(seeded, service), lambda _: None)

    assert bluegreen.describe(seeded, service).live.weight == 100


def test_rollback_refuses_a_colour_with_no_healthy_instances(
    with_green, seeded, config, make_context, run_stage, target_health
):
    service = config.service("demo")
    ctx = make_context(records=(VerifiedAmi(with_green),))
    for stage in (RolloutStage, LaunchTemplateStage, GreenAsgStage, ShiftStage):
        run_stage(stage, ctx)
    target_health.fail("demo-blue")

    with pytest.raises(BakeError, match="refusing to roll back to blue: it is not healthy"):
        bluegreen.rollback(seeded, service, bluegreen.describe(seeded, service), lambda _: None)

    state = bluegreen.describe(seeded, service)
    assert (state.live.color, state.live.weight) == ("green", 100)
