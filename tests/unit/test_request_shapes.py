"""What the pipeline sends back from a describe call is a request AWS takes, even when AWS's answer
holds every member its response shape allows (moto's holds few of them)."""

from __future__ import annotations

import pytest

from bake.aws import autoscaling, elbv2, launch_templates, shapes
from bake.aws.session import Cloud
from bake.stages.rollout import new_version_data
from tests.request_shapes import fullest, problems


@pytest.fixture
def offline() -> Cloud:
    """Clients for their service models only: nothing here reaches an endpoint."""
    return Cloud(region="us-east-1", endpoint_url="http://127.0.0.1:9")


def response_shape(cloud: Cloud, service: str, operation: str, *path: str):
    shape = cloud.client(service).meta.service_model.operation_model(operation).output_shape
    for name in path:
        shape = shape.members[name]
        shape = shape.member if shape.type_name == "list" else shape
    return shape


def fullest_version_data(cloud: Cloud) -> dict:
    """A launch template version's data with every member AWS may describe."""
    return fullest(
        response_shape(
            cloud,
            "ec2",
            "DescribeLaunchTemplateVersions",
            "LaunchTemplateVersions",
            "LaunchTemplateData",
        )  # fmt: skip
    )


def test_the_fullest_launch_template_version_is_sent_back_as_aws_takes_it(offline: Cloud) -> None:
    described = fullest_version_data(offline)
    assert described["MetadataOptions"]["State"], "AWS answers with members requests reject"
    request = launch_templates.request_shape(offline)
    assert any("State" in line for line in problems(request, described))

    data = new_version_data(launch_templates.sendable(offline, described), "ami-1", "t3.small")

    assert problems(request, data) == []
    assert data["ImageId"] == "ami-1" and data["InstanceType"] == "t3.small"
    assert "State" not in data["MetadataOptions"]
    assert "IsPrimaryIpv6" not in data["NetworkInterfaces"][0]["Ipv6Addresses"][0]


def test_a_version_aws_describes_in_full_is_the_same_as_the_data_it_was_made_from(
    offline: Cloud,
) -> None:
    described = fullest_version_data(offline)
    sent = launch_templates.sendable(offline, described)

    assert not launch_templates.same_data(described, sent), "response-only members differ"
    assert launch_templates.same_data(launch_templates.sendable(offline, described), sent)


def test_the_live_metadata_options_are_kept_and_only_tokens_are_required() -> None:
    source = {
        "ImageId": "ami-0",
        "MetadataOptions": {
            "HttpTokens": "optional",
            "HttpPutResponseHopLimit": 2,
            "InstanceMetadataTags": "enabled",
        },
    }

    data = new_version_data(source, "ami-1", None)

    assert data["MetadataOptions"] == {
        "HttpEndpoint": "enabled",
        "HttpTokens": "required",
        "HttpPutResponseHopLimit": 2,
        "InstanceMetadataTags": "enabled",
    }
    assert source["MetadataOptions"]["HttpTokens"] == "optional", "the source is not changed"


def test_the_fullest_lifecycle_hook_and_scaling_policy_are_put_as_aws_takes_them(
    offline: Cloud,
) -> None:
    client = offline.client("autoscaling")
    hook = fullest(
        response_shape(offline, "autoscaling", "DescribeLifecycleHooks", "LifecycleHooks")
    )
    policy = fullest(response_shape(offline, "autoscaling", "DescribePolicies", "ScalingPolicies"))
    put_hook = shapes.request_shape(client, "PutLifecycleHook")
    put_policy = shapes.request_shape(client, "PutScalingPolicy")
    assert problems(put_hook, hook) and problems(put_policy, policy)

    hook_request = autoscaling.as_hook(offline, hook)
    policy_request = autoscaling.as_policy(offline, policy)

    assert problems(put_hook, {"AutoScalingGroupName": "demo-green", **hook_request}) == []
    assert problems(put_policy, {"AutoScalingGroupName": "demo-green", **policy_request}) == []
    assert "AutoScalingGroupName" not in hook_request | policy_request, "the new group is named"
    specification = shapes.request_shape(
        client, "CreateAutoScalingGroup", "LifecycleHookSpecificationList"
    )
    assert problems(specification, hook_request) == []
    assert hook_request["LifecycleHookName"] == hook["LifecycleHookName"]
    assert policy_request["TargetTrackingConfiguration"] == policy["TargetTrackingConfiguration"]


def test_the_fullest_target_group_is_mirrored_as_aws_takes_it(offline: Cloud) -> None:
    client = offline.client("elbv2")
    source = fullest(response_shape(offline, "elbv2", "DescribeTargetGroups", "TargetGroups"))
    create = shapes.request_shape(client, "CreateTargetGroup")
    assert problems(create, source)

    settings = elbv2.mirrored_settings(offline, source)

    assert problems(create, {"Name": "demo-green", **settings}) == []
    assert settings["HealthCheckPath"] == source["HealthCheckPath"]
    assert settings["Matcher"] == source["Matcher"]
    assert "TargetGroupArn" not in settings and "LoadBalancerArns" not in settings


def test_an_empty_setting_aws_describes_is_not_sent_back(offline: Cloud) -> None:
    terminating = "autoscaling:EC2_INSTANCE_TERMINATING"
    hook = {"LifecycleHookName": "drain", "LifecycleTransition": terminating,
            "NotificationMetadata": None, "GlobalTimeout": 172800}  # fmt: skip

    assert autoscaling.as_hook(offline, hook) == {
        "LifecycleHookName": "drain",
        "LifecycleTransition": terminating,
    }


def test_what_aws_checks_beyond_botocore_is_found(offline: Cloud) -> None:
    create = shapes.request_shape(offline.client("elbv2"), "CreateTargetGroup")

    found = problems(
        create,
        {
            "Name": "demo",
            "Protocol": "HTTPX",
            "HealthCheckPath": "/" * 2000,
            "HealthCheckIntervalSeconds": 500,
        },
    )

    assert any("'HTTPX' is not one of" in line for line in found)
    assert any(".HealthCheckPath: length 2000 is above the maximum 1024" in line for line in found)
    assert any(
        ".HealthCheckIntervalSeconds: 500 is above the maximum 300" in line for line in found
    )
