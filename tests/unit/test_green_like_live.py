"""The incoming colour is sized like the live one and made like it: an autoscaled service is never
halved by a swap, and a created group keeps the live group's health checks, termination policies,
tags, lifecycle hooks and scaling policies."""

from __future__ import annotations

import pytest

from bake.aws import autoscaling
from bake.local.seed import ensure_seeded
from bake.records import VerifiedAmi
from bake.stages.green_asg import GreenAsgStage
from bake.stages.launch_template import LaunchTemplateStage
from bake.stages.rollout import RolloutStage


@pytest.fixture
def seeded(cloud, config, base_ami):
    ensure_seeded(cloud, config, base_ami)
    return cloud


def _green(make_context, run_stage, register_ami):
    ctx = make_context(records=(VerifiedAmi(register_ami("goldenbake-base-2")),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)
    run_stage(GreenAsgStage, ctx)
    return autoscaling.find_group(ctx.target.cloud, "demo-green")


def test_an_autoscaled_live_colour_is_never_halved(
    seeded, make_context, run_stage, register_ami
) -> None:
    seeded.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName="demo-blue", MinSize=1, DesiredCapacity=4, MaxSize=6
    )
    green = _green(make_context, run_stage, register_ami)
    assert (green["MinSize"], green["DesiredCapacity"], green["MaxSize"]) == (2, 4, 6)
    assert len(autoscaling.in_service(green)) == 4


def test_the_service_capacity_is_the_floor(seeded, make_context, run_stage, register_ami) -> None:
    seeded.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName="demo-blue", MinSize=0, DesiredCapacity=1, MaxSize=1
    )
    green = _green(make_context, run_stage, register_ami)
    assert (green["MinSize"], green["DesiredCapacity"], green["MaxSize"]) == (2, 2, 2)


def test_a_created_group_is_made_like_the_live_one(
    seeded, make_context, run_stage, register_ami
) -> None:
    client = seeded.client("autoscaling")
    blue = autoscaling.find_group(seeded, "demo-blue")
    autoscaling.delete_group(seeded, "demo-blue")  # moto cannot update termination policies
    autoscaling.create_group(
        seeded,
        "demo-blue",
        launch_template_id=blue["LaunchTemplate"]["LaunchTemplateId"],
        launch_template_version=int(blue["LaunchTemplate"]["Version"]),
        capacity=(2, 2, 2),
        subnets=blue["VPCZoneIdentifier"],
        target_group_arns=blue["TargetGroupARNs"],
        health_check_grace_period=123,
        tags={"bake:service": "demo", "bake:color": "blue"},
        TerminationPolicies=["OldestInstance"],
    )
    client.create_or_update_tags(
        Tags=[
            {
                "ResourceId": "demo-blue",
                "ResourceType": "auto-scaling-group",
                "Key": "team",
                "Value": "platform",
                "PropagateAtLaunch": True,
            }
        ]
    )
    client.put_lifecycle_hook(
        AutoScalingGroupName="demo-blue",
        LifecycleHookName="drain",
        LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
        HeartbeatTimeout=60,
        DefaultResult="CONTINUE",
    )
    client.put_scaling_policy(
        AutoScalingGroupName="demo-blue",
        PolicyName="cpu-50",
        PolicyType="TargetTrackingScaling",
        TargetTrackingConfiguration={
            "PredefinedMetricSpecification": {"PredefinedMetricType": "ASGAverageCPUUtilization"},
            "TargetValue": 50.0,
        },
    )

    (blue_policy,) = autoscaling.scaling_policies(seeded, "demo-blue")

    green = _green(make_context, run_stage, register_ami)

    assert green["TerminationPolicies"] == ["OldestInstance"]
    assert green["HealthCheckGracePeriod"] == 123
    tags = {tag["Key"]: tag["Value"] for tag in green["Tags"]}
    assert tags["team"] == "platform" and tags["bake:color"] == "green"
    (hook,) = autoscaling.lifecycle_hooks(seeded, "demo-green")
    assert hook == autoscaling.lifecycle_hooks(seeded, "demo-blue")[0]
    assert (hook["LifecycleHookName"], hook["HeartbeatTimeout"]) == ("drain", 60)
    # (moto keeps scaling policies by name alone, so blue's is read before the swap)
    (policy,) = autoscaling.scaling_policies(seeded, "demo-green")
    assert policy == blue_policy
    assert policy["TargetTrackingConfiguration"]["TargetValue"] == 50.0
