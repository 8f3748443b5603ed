"""The launch-template, green-asg and shift stages against a seeded moto server."""

from __future__ import annotations

import pytest

from bake import bluegreen
from bake.aws import elbv2
from bake.errors import StageFailed
from bake.local.seed import ensure_seeded
from bake.records import (
    AlreadyLive,
    LaunchTemplateVersion,
    Records,
    RolloutPlan,
    Standby,
    Traffic,
    VerifiedAmi,
)
from bake.rollouts import Rollout
from bake.stages.green_asg import GreenAsgStage
from bake.stages.launch_template import LaunchTemplateStage
from bake.stages.rollout import RolloutStage
from bake.stages.shift import ShiftStage

SWAP = (RolloutStage, LaunchTemplateStage, GreenAsgStage, ShiftStage)


@pytest.fixture
def seeded(cloud, config, base_ami):
    ensure_seeded(cloud, config, base_ami)
    return cloud


@pytest.fixture
def swap(make_context, run_stage):
    """Run the three swap stages for a new AMI, as the pipeline would; gives the context."""

    def run(ami, **kwargs):
        ctx = make_context(records=(VerifiedAmi(ami),), **kwargs)
        for stage in SWAP:
            run_stage(stage, ctx)
        return ctx

    return run


def _plan(cloud, service, incoming, rollback, ami="ami-12345678"):
    """A rollout plan as the rollout stage would hand it on."""
    rollout = Rollout("run-1", "rolling", incoming, ami, rollback, None, "2026-01-01T00:00:00Z")
    balancer = bluegreen.describe(cloud, service).switch.load_balancer_arn
    return RolloutPlan(rollout, balancer, "lt-0", 1, {})


def _group(cloud, name):
    groups = cloud.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return groups["AutoScalingGroups"][0] if groups["AutoScalingGroups"] else None


def _images(cloud, group):
    """ImageId of each of the group's InService instances, as EC2 sees them."""
    ids = [i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "InService"]
    reservations = cloud.client("ec2").describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i["ImageId"] for r in reservations for i in r["Instances"]}


def _weights(cloud, service):
    """Listener weights by colour."""
    state = bluegreen.describe(cloud, service)
    colors = [entry for entry in (state.live, state.standby) if entry]
    return {entry.color: entry.weight for entry in colors}


def _resources(ctx):
    return [(r.kind, r.id) for r in ctx.history.runs()[0].resources]


def _version_data(cloud, number):
    (version,) = cloud.client("ec2").describe_launch_template_versions(
        LaunchTemplateName="demo", Versions=[str(number)]
    )["LaunchTemplateVersions"]
    return version


# launch-template


def test_launch_template_copies_the_pinned_version_with_new_ami_and_imdsv2(
    register_ami, seeded, make_context, run_stage
):
    ec2 = seeded.client("ec2")
    template_id = ec2.describe_launch_templates(LaunchTemplateNames=["demo"])["LaunchTemplates"][0][
        "LaunchTemplateId"
    ]
    pinned = dict(_version_data(seeded, 1)["LaunchTemplateData"])
    pinned["MetadataOptions"] = {"HttpTokens": "optional", "HttpEndpoint": "enabled"}
    ec2.create_launch_template_version(LaunchTemplateId=template_id, LaunchTemplateData=pinned)
    seeded.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName="demo-blue",
        LaunchTemplate={"LaunchTemplateId": template_id, "Version": "2"},
    )
    # A newer version nobody runs: the stage must start from the pinned one, not $Latest.
    ec2.create_launch_template_version(
        LaunchTemplateId=template_id, LaunchTemplateData={**pinned, "InstanceType": "c5.xlarge"}
    )
    new_ami = register_ami("goldenbake-base-2")
    ctx = make_context(records=(VerifiedAmi(new_ami),))
    run_stage(RolloutStage, ctx)

    outcome = run_stage(LaunchTemplateStage, ctx)

    assert outcome.status == "succeeded"
    outputs = ctx.records.outputs()
    assert (outputs["launch_template_id"], outputs["launch_template_version"]) == (template_id, 4)
    version = _version_data(seeded, 4)
    data = version["LaunchTemplateData"]
    assert data["ImageId"] == new_ami
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpEndpoint": "enabled"}
    assert data["InstanceType"] == "t3.micro"
    assert data["SecurityGroupIds"] == pinned["SecurityGroupIds"]
    (instance_tags,) = data["TagSpecifications"]
    assert {t["Key"]: t["Value"] for t in instance_tags["Tags"]} == {
        "bake:service": "demo",
        "bake:ami": new_ami,
    }
    assert ctx.run_id in version["VersionDescription"]
    assert new_ami in version["VersionDescription"]
    assert _resources(ctx) == [("launch-template-version", f"{template_id}:4")]


def test_launch_template_skips_when_a_version_already_has_that_data(
    register_ami, seeded, make_context, run_stage
):
    new_ami = register_ami("goldenbake-base-2")
    earlier = make_context(records=(VerifiedAmi(new_ami),))
    run_stage(RolloutStage, earlier)
    first = run_stage(LaunchTemplateStage, earlier)
    ctx = make_context(records=(VerifiedAmi(new_ami),))
    run_stage(RolloutStage, ctx)

    second = run_stage(LaunchTemplateStage, ctx)

    assert (first.status, second.status) == ("succeeded", "skipped")
    assert ctx.records.outputs()["launch_template_version"] == 2
    versions = seeded.client("ec2").describe_launch_template_versions(LaunchTemplateName="demo")
    assert len(versions["LaunchTemplateVersions"]) == 2
    assert _resources(ctx) == []


def test_launch_template_applies_the_service_instance_type(
    register_ami, seeded, make_config, make_context, run_stage
):
    ctx = make_context(
        config=make_config(instance_type="m6i.large"),
        records=(VerifiedAmi(register_ami("goldenbake-base-2")),),
    )

    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)

    assert _version_data(seeded, 2)["LaunchTemplateData"]["InstanceType"] == "m6i.large"


# green-asg


def test_green_asg_creates_green_on_the_new_version(register_ami, seeded, make_context, run_stage):
    new_ami = register_ami("goldenbake-base-2")
    ctx = make_context(records=(VerifiedAmi(new_ami),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)

    outcome = run_stage(GreenAsgStage, ctx)

    assert outcome.status == "succeeded"
    assert (ctx.records.outputs()["color"], ctx.records.outputs()["asg"]) == ("green", "demo-green")
    blue, green = _group(seeded, "demo-blue"), _group(seeded, "demo-green")
    assert green["LaunchTemplate"]["Version"] == "2"
    assert (green["MinSize"], green["DesiredCapacity"], green["MaxSize"]) == (2, 2, 2)
    assert green["VPCZoneIdentifier"] == blue["VPCZoneIdentifier"]
    assert green["HealthCheckType"] == "ELB"
    assert {t["Key"]: t["Value"] for t in green["Tags"]} == {
        "bake:service": "demo",
        "bake:color": "green",
    }
    assert set(_images(seeded, green).values()) == {new_ami}
    (green_tg,) = seeded.client("elbv2").describe_target_groups(Names=["demo-green"])[
        "TargetGroups"
    ]
    (blue_tg,) = seeded.client("elbv2").describe_target_groups(Names=["demo-blue"])["TargetGroups"]
    assert (
        green["TargetGroupARNs"]
        == [green_tg["TargetGroupArn"]]
        == [ctx.records.outputs()["target_group_arn"]]
    )
    for key in ("Protocol", "Port", "VpcId", "HealthCheckPath", "HealthCheckProtocol"):
        assert green_tg[key] == blue_tg[key]
    registered = seeded.client("elbv2").describe_target_health(
        TargetGroupArn=green_tg["TargetGroupArn"]
    )["TargetHealthDescriptions"]
    assert {entry["Target"]["Id"] for entry in registered} == set(_images(seeded, green))
    health = elbv2.target_health(seeded, green_tg["TargetGroupArn"], list(_images(seeded, green)))
    assert {h["State"] for h in health.values()} == {"healthy"}
    assert len(health) == 2
    assert _weights(seeded, ctx.service) == {"blue": 100, "green": 0}
    assert _resources(ctx)[1:] == [
        ("target-group", green_tg["TargetGroupArn"]),
        ("auto-scaling-group", "demo-green"),
    ]


@pytest.mark.parametrize("capacity", [2, {"min": 1, "desired": 2, "max": 3}])
def test_green_asg_skips_when_the_standby_already_serves_the_version(
    register_ami, seeded, make_config, make_context, run_stage, capacity
):
    config = make_config(capacity=capacity)
    ctx = make_context(config=config, records=(VerifiedAmi(register_ami("goldenbake-base-2")),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)
    made = run_stage(GreenAsgStage, ctx)
    before = set(_images(seeded, _group(seeded, "demo-green")))

    again = run_stage(GreenAsgStage, ctx)

    assert again.status == "skipped"
    assert Records(*again.records).get(Standby) == Records(*made.records).get(Standby)
    assert again.records[0].target_group_arn.startswith("arn:aws:elasticloadbalancing:")
    assert set(_images(seeded, _group(seeded, "demo-green"))) == before


# shift and full swaps


def test_swap_moves_all_traffic_and_leaves_the_old_live_group_running(
    register_ami, seeded, base_ami, swap
):
    blue_before = _images(seeded, _group(seeded, "demo-blue"))
    new_ami = register_ami("goldenbake-base-2")

    ctx = swap(new_ami)

    assert ctx.records.outputs()["live_color"] == "green"
    state = bluegreen.describe(seeded, ctx.service)
    assert (state.live.color, state.live.weight, state.live.ami) == ("green", 100, new_ami)
    assert (state.standby.color, state.standby.weight, state.standby.ami) == ("blue", 0, base_ami)
    assert _images(seeded, _group(seeded, "demo-blue")) == blue_before
    assert state.standby.healthy == 2


def test_two_swaps_alternate_colours_and_replace_the_standby_instances(
    register_ami, seeded, base_ami, swap
):
    first_ami = register_ami("goldenbake-base-2")
    second_ami = register_ami("goldenbake-base-3")
    swap(first_ami)
    old_blue = set(_images(seeded, _group(seeded, "demo-blue")))

    ctx = swap(second_ami)

    standby, traffic = ctx.records.need(Standby, "test"), ctx.records.need(Traffic, "test")
    assert (standby.color, standby.asg, traffic.live_color) == (
        "blue",
        "demo-blue",
        "blue",
    )
    blue = _group(seeded, "demo-blue")
    assert (
        blue["LaunchTemplate"]["Version"]
        == str(ctx.records.need(LaunchTemplateVersion, "test").launch_template_version)
        == "3"
    )
    images = _images(seeded, blue)
    assert len(images) == 2
    assert set(images.values()) == {second_ami}
    assert not old_blue & set(images)  # the base-AMI instances are gone, not kept alongside
    # moto keeps the terminated instances registered (and "healthy"); only the group's count.
    state = bluegreen.describe(seeded, ctx.service)
    assert (state.live.color, state.live.ami, state.live.healthy) == ("blue", second_ami, 2)
    assert (state.standby.color, state.standby.ami, state.standby.weight) == ("green", first_ami, 0)
    assert ("auto-scaling-group", "demo-green") not in _resources(ctx)


def test_weighted_shift_passes_through_each_step(
    register_ami, seeded, make_config, make_context, run_stage, shift_clock
):
    config = make_config(shift_steps=[10, 50, 100], shift_interval=7)
    ctx = make_context(config=config, records=(VerifiedAmi(register_ami("goldenbake-base-2")),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)
    run_stage(GreenAsgStage, ctx)
    seen = []
    shift_clock.on_sleep = lambda seconds: seen.append((seconds, _weights(seeded, ctx.service)))

    run_stage(ShiftStage, ctx)

    # each 7 s interval is watched in polls of at most 5 s
    assert seen == [
        (5, {"green": 10, "blue": 90}),
        (2, {"green": 10, "blue": 90}),
        (5, {"green": 50, "blue": 50}),
        (2, {"green": 50, "blue": 50}),
    ]
    assert _weights(seeded, ctx.service) == {"green": 100, "blue": 0}


def test_a_rerun_shift_after_green_took_all_traffic_moves_nothing_and_only_watches(
    register_ami, seeded, swap, run_stage, shift_clock
):
    ctx = swap(register_ami("goldenbake-base-2"))
    moved = []
    seeded.client("elbv2").meta.events.register(
        "before-call.elastic-load-balancing-v2.ModifyListener", lambda **_: moved.append(1)
    )

    again = run_stage(ShiftStage, ctx)

    assert again.status == "succeeded"
    assert moved == []
    assert _weights(seeded, ctx.service) == {"green": 100, "blue": 0}
    assert bluegreen.describe(seeded, ctx.service).rollout.state == "live"


# failures


def test_unhealthy_new_green_fails_and_undo_deletes_it(
    register_ami, seeded, make_context, run_stage, target_health
):
    target_health.fail("demo-green", "Health checks failed with these codes: [502]")
    ctx = make_context(records=(VerifiedAmi(register_ami("goldenbake-base-2")),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)
    stage = GreenAsgStage(ctx)

    with pytest.raises(StageFailed) as failure:
        stage.run()

    green_ids = _images(seeded, _group(seeded, "demo-green"))
    assert len(green_ids) == 2
    message = str(failure.value)
    assert message.startswith("green-asg: demo-green is not healthy")
    for instance_id in green_ids:
        assert instance_id in message
    assert "Target.FailedHealthChecks" in message
    stage.undo()
    assert _group(seeded, "demo-green") is None
    state = bluegreen.describe(seeded, ctx.service)
    assert (state.live.color, state.live.weight, state.live.healthy) == ("blue", 100, 2)
    assert state.standby is None


def test_unhealthy_existing_standby_fails_and_undo_restores_it(
    register_ami, seeded, swap, make_context, run_stage, target_health
):
    first_ami = register_ami("goldenbake-base-2")
    swap(first_ami)
    swap(register_ami("goldenbake-base-3"))  # blue live again, green standby on v2
    target_health.fail("demo-green")
    ctx = make_context(records=(VerifiedAmi(register_ami("goldenbake-base-4")),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)
    stage = GreenAsgStage(ctx)

    with pytest.raises(StageFailed, match="demo-green is not healthy"):
        stage.run()
    assert _group(seeded, "demo-green")["LaunchTemplate"]["Version"] == "4"
    stage.undo()

    green = _group(seeded, "demo-green")
    assert green["LaunchTemplate"]["Version"] == "2"
    assert (green["MinSize"], green["DesiredCapacity"], green["MaxSize"]) == (2, 2, 2)
    assert set(_images(seeded, green).values()) == {first_ami}
    assert len(_images(seeded, green)) == 2
    assert _weights(seeded, ctx.service) == {"blue": 100, "green": 0}


def test_green_turning_unhealthy_mid_shift_fails_and_undo_returns_traffic(
    register_ami, seeded, make_config, make_context, run_stage, target_health, shift_clock
):
    config = make_config(shift_steps=[10, 50, 100])
    ctx = make_context(config=config, records=(VerifiedAmi(register_ami("goldenbake-base-2")),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)
    run_stage(GreenAsgStage, ctx)
    shift_clock.on_sleep = lambda seconds: target_health.fail("demo-green")
    stage = ShiftStage(ctx)

    with pytest.raises(StageFailed, match="green became unhealthy"):
        stage.run()
    assert _weights(seeded, ctx.service) == {"green": 10, "blue": 90}
    stage.undo()

    assert _weights(seeded, ctx.service) == {"blue": 100, "green": 0}
    assert bluegreen.describe(seeded, ctx.service).live.color == "blue"


def test_swapping_in_what_is_already_live_changes_nothing(register_ami, seeded, swap) -> None:
    ami = register_ami("goldenbake-base-2")
    first = swap(ami)
    before = bluegreen.describe(seeded, first.service)
    blue_before = _group(seeded, "demo-blue")
    versions_before = _version_data(seeded, "$Latest")["VersionNumber"]

    again = swap(ami)

    assert again.records.need(AlreadyLive, "test") == AlreadyLive("green", ami)
    assert again.records.get(Standby) is None and again.records.get(Traffic) is None
    after = bluegreen.describe(seeded, first.service)
    assert (after.live.color, after.live.weight, after.standby.ami) == (
        "green",
        100,
        before.standby.ami,
    )
    blue_after = _group(seeded, "demo-blue")
    assert blue_after["LaunchTemplate"] == blue_before["LaunchTemplate"]
    assert [i["InstanceId"] for i in blue_after["Instances"]] == [
        i["InstanceId"] for i in blue_before["Instances"]
    ]
    assert _version_data(seeded, "$Latest")["VersionNumber"] == versions_before


def _set_weights(cloud, service, weights: dict[str, int]) -> None:
    state = bluegreen.describe(cloud, service)
    by_arn = {
        entry.target_group_arn: weights[entry.color]
        for entry in (state.live, state.standby)
        if entry and entry.target_group_arn
    }
    elbv2.set_forward_weights(cloud, state.switch, by_arn)


@pytest.mark.parametrize(
    ("green", "blue", "done"),
    [(100, 0, True), (100, 50, False), (50, 0, True), (0, 100, False)],
)
def test_shift_is_done_only_when_green_has_all_the_traffic_and_blue_none(
    register_ami, seeded, swap, run_stage, make_context, green, blue, done
) -> None:
    ctx = swap(register_ami("goldenbake-base-2"))
    _set_weights(seeded, ctx.service, {"green": green, "blue": blue})
    moved = []
    seeded.client("elbv2").meta.events.register(
        "before-call.elastic-load-balancing-v2.ModifyListener", lambda **_: moved.append(1)
    )
    again = make_context(records=(ctx.records.need(RolloutPlan, "test"),))
    run_stage(ShiftStage, again)
    assert (moved == []) is done
    weights = _weights(seeded, ctx.service)
    assert weights["green"] > 0
    assert weights["blue"] == 0


def test_shift_to_a_colour_without_a_group_fails_and_moves_nothing(
    seeded, config, make_context, run_stage
) -> None:
    ctx = make_context(records=(_plan(seeded, config.service("demo"), "green", "blue"),))
    with pytest.raises(StageFailed, match="green has no Auto Scaling group or target group"):
        run_stage(ShiftStage, ctx)
    assert _weights(seeded, ctx.service) == {"blue": 100}


def test_the_standby_gets_its_target_group_back(register_ami, seeded, swap) -> None:
    first = swap(register_ami("goldenbake-base-2"))
    blue = _group(seeded, "demo-blue")
    seeded.client("autoscaling").detach_load_balancer_target_groups(
        AutoScalingGroupName="demo-blue", TargetGroupARNs=blue["TargetGroupARNs"]
    )
    swap(register_ami("goldenbake-base-3"))
    assert _group(seeded, "demo-blue")["TargetGroupARNs"] == blue["TargetGroupARNs"]
    assert bluegreen.describe(seeded, first.service).live.color == "blue"


@pytest.mark.parametrize(
    ("live_group", "expected_type"), [(True, "t3.micro"), (False, "c5.xlarge")]
)
def test_launch_template_starts_from_the_live_version_or_else_the_default(
    register_ami, seeded, make_context, run_stage, live_group, expected_type
) -> None:
    """The live group's pinned version (t3.micro) is the source; the template's default (a newer
    c5.xlarge version) only when no group is live."""
    ec2 = seeded.client("ec2")
    pinned = _version_data(seeded, 1)["LaunchTemplateData"]
    template_id = _version_data(seeded, 1)["LaunchTemplateId"]
    ec2.create_launch_template_version(
        LaunchTemplateId=template_id, LaunchTemplateData={**pinned, "InstanceType": "c5.xlarge"}
    )
    ec2.modify_launch_template(LaunchTemplateId=template_id, DefaultVersion="2")
    if not live_group:
        seeded.client("autoscaling").delete_auto_scaling_group(
            AutoScalingGroupName="demo-blue", ForceDelete=True
        )
    ctx = make_context(records=(VerifiedAmi(register_ami("goldenbake-base-2")),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)
    created = ctx.records.need(LaunchTemplateVersion, "test").launch_template_version
    assert pinned["InstanceType"] == "t3.micro"
    assert _version_data(seeded, created)["LaunchTemplateData"]["InstanceType"] == expected_type


def test_an_undone_standby_is_pinned_to_the_number_it_ran_never_an_alias(
    register_ami, seeded, swap, make_context, run_stage, target_health
) -> None:
    swap(register_ami("goldenbake-base-2"))
    swap(register_ami("goldenbake-base-3"))  # blue live again, green standby on v2
    template_id = _group(seeded, "demo-green")["LaunchTemplate"]["LaunchTemplateId"]
    seeded.client("ec2").modify_launch_template(LaunchTemplateId=template_id, DefaultVersion="2")
    seeded.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName="demo-green",
        LaunchTemplate={"LaunchTemplateId": template_id, "Version": "$Default"},
    )
    target_health.fail("demo-green")
    ctx = make_context(records=(VerifiedAmi(register_ami("goldenbake-base-4")),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)
    stage = GreenAsgStage(ctx)
    with pytest.raises(StageFailed, match="demo-green is not healthy"):
        stage.run()
    stage.undo()
    assert _group(seeded, "demo-green")["LaunchTemplate"]["Version"] == "2"


def test_a_live_colour_with_all_traffic_and_no_other_group_is_left_as_it_is(
    register_ami, seeded, swap, make_context, run_stage
) -> None:
    ctx = swap(register_ami("goldenbake-base-2"))
    seeded.client("autoscaling").delete_auto_scaling_group(
        AutoScalingGroupName="demo-blue", ForceDelete=True
    )
    plan = ctx.records.need(RolloutPlan, "test")
    again = run_stage(ShiftStage, make_context(records=(plan,)))
    assert again.status == "succeeded"
    assert _weights(seeded, ctx.service) == {"green": 100}
