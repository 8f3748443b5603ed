"""Seeding the local cloud: a network and each service's blue environment, once."""

from __future__ import annotations

from bake.aws.session import Cloud
from bake.local.seed import ensure_seeded


def _count_calls(cloud: Cloud) -> list[str]:
    """Record the name of every API call made through `cloud` (register before any client)."""
    calls: list[str] = []
    cloud.session.events.register("before-call.*.*", lambda model, **_: calls.append(model.name))
    return calls


def test_seed_creates_network_and_blue_environment(cloud, config, base_ami):
    assert ensure_seeded(cloud, config, base_ami) is True
    ec2, elb, asg = cloud.client("ec2"), cloud.client("elbv2"), cloud.client("autoscaling")

    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "tag:bake:local-seed", "Values": ["true"]}])[
        "Vpcs"
    ]
    assert vpc["CidrBlock"] == "10.0.0.0/16"
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])[
        "Subnets"
    ]
    assert len(subnets) == 2
    assert len({subnet["AvailabilityZone"] for subnet in subnets}) == 2

    (load_balancer,) = elb.describe_load_balancers(Names=["demo"])["LoadBalancers"]
    (blue_tg,) = elb.describe_target_groups(Names=["demo-blue"])["TargetGroups"]
    assert (blue_tg["Protocol"], blue_tg["Port"], blue_tg["HealthCheckPath"]) == (
        "HTTP",
        80,
        "/health",
    )
    (listener,) = elb.describe_listeners(LoadBalancerArn=load_balancer["LoadBalancerArn"])[
        "Listeners"
    ]
    assert listener["Port"] == 80
    forward = listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"]
    assert forward == [{"TargetGroupArn": blue_tg["TargetGroupArn"], "Weight": 100}]
    assert elb.describe_target_groups()["TargetGroups"] == [blue_tg]  # no green yet

    (version,) = ec2.describe_launch_template_versions(LaunchTemplateName="demo")[
        "LaunchTemplateVersions"
    ]
    data = version["LaunchTemplateData"]
    assert version["VersionNumber"] == 1
    assert data["ImageId"] == base_ami
    assert data["InstanceType"] == "t3.micro"
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpEndpoint": "enabled"}
    assert len(data["SecurityGroupIds"]) == 1
    assert data["IamInstanceProfile"] == {"Name": "goldenbake-local"}
    (profile,) = cloud.client("iam").list_instance_profiles()["InstanceProfiles"]
    assert [role["RoleName"] for role in profile["Roles"]] == ["goldenbake-local"]

    (group,) = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["demo-blue"])[
        "AutoScalingGroups"
    ]
    assert group["LaunchTemplate"]["Version"] == "1"
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (2, 2, 2)
    assert group["TargetGroupARNs"] == [blue_tg["TargetGroupArn"]]
    assert group["HealthCheckType"] == "ELB"
    assert set(group["VPCZoneIdentifier"].split(",")) == {s["SubnetId"] for s in subnets}
    tags = {tag["Key"]: tag["Value"] for tag in group["Tags"]}
    assert tags == {"bake:service": "demo", "bake:color": "blue"}
    assert [i["LifecycleState"] for i in group["Instances"]] == ["InService", "InService"]


def test_second_seed_is_one_describe_call_and_changes_nothing(cloud, config, base_ami):
    assert ensure_seeded(cloud, config, base_ami) is True
    counting = Cloud(cloud.region, endpoint_url=cloud.endpoint_url)
    calls = _count_calls(counting)

    assert ensure_seeded(counting, config, base_ami) is False

    assert calls == ["DescribeLaunchTemplates"]
    assert len(cloud.client("ec2").describe_vpcs()["Vpcs"]) == 2  # moto's default VPC + ours
    versions = cloud.client("ec2").describe_launch_template_versions(LaunchTemplateName="demo")
    assert len(versions["LaunchTemplateVersions"]) == 1
    groups = cloud.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    assert [group["AutoScalingGroupName"] for group in groups] == ["demo-blue"]


def test_a_service_added_later_is_seeded_alone(cloud, make_config, base_ami):
    demo = {"image": "base", "capacity": 1}
    assert ensure_seeded(cloud, make_config(services={"demo": demo}), base_ami) is True
    both = make_config(
        services={"demo": demo, "api": {"image": "base", "capacity": 1, "listener_port": 8080}}
    )

    assert ensure_seeded(cloud, both, base_ami) is True
    assert ensure_seeded(cloud, both, base_ami) is False

    ec2 = cloud.client("ec2")
    seed_vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:bake:local-seed", "Values": ["true"]}])
    assert len(seed_vpcs["Vpcs"]) == 1
    assert (
        len(
            ec2.describe_subnets(
                Filters=[{"Name": "vpc-id", "Values": [seed_vpcs["Vpcs"][0]["VpcId"]]}]
            )["Subnets"]
        )
        == 2
    )
    names = {
        group["AutoScalingGroupName"]
        for group in cloud.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    }
    assert names == {"demo-blue", "api-blue"}
    (api_lb,) = cloud.client("elbv2").describe_load_balancers(Names=["api"])["LoadBalancers"]
    listeners = cloud.client("elbv2").describe_listeners(LoadBalancerArn=api_lb["LoadBalancerArn"])
    assert [listener["Port"] for listener in listeners["Listeners"]] == [8080]


def test_service_instance_type_goes_into_the_seeded_template(cloud, make_config, base_ami):
    ensure_seeded(cloud, make_config(instance_type="m6i.large"), base_ami)

    (version,) = cloud.client("ec2").describe_launch_template_versions(LaunchTemplateName="demo")[
        "LaunchTemplateVersions"
    ]
    assert version["LaunchTemplateData"]["InstanceType"] == "m6i.large"


def test_an_interrupted_seed_is_completed_without_duplicates(cloud, config, base_ami):
    ensure_seeded(cloud, config, base_ami)
    ec2 = cloud.client("ec2")
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "tag:bake:local-seed", "Values": ["true"]}])[
        "Vpcs"
    ]
    # As if the seed had stopped just before marking the service done.
    (template,) = ec2.describe_launch_templates(LaunchTemplateNames=["demo"])["LaunchTemplates"]
    ec2.delete_tags(Resources=[template["LaunchTemplateId"]], Tags=[{"Key": "bake:seeded"}])

    assert ensure_seeded(cloud, config, base_ami) is True

    elb = cloud.client("elbv2")
    assert len(elb.describe_load_balancers()["LoadBalancers"]) == 1
    assert len(elb.describe_target_groups()["TargetGroups"]) == 1
    (load_balancer,) = elb.describe_load_balancers()["LoadBalancers"]
    assert (
        len(elb.describe_listeners(LoadBalancerArn=load_balancer["LoadBalancerArn"])["Listeners"])
        == 1
    )
    assert len(ec2.describe_launch_templates()["LaunchTemplates"]) == 1
    assert (
        len(ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"])
        == 2
    )
    groups = cloud.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    assert [len(group["Instances"]) for group in groups] == [2]
    assert ensure_seeded(cloud, config, base_ami) is False


def test_fifty_services_are_seeded_and_then_found_in_one_call(cloud, make_config, base_ami):
    # More services than tags one resource may carry (50, with the seed VPC's own).
    names = [f"svc{n:02d}" for n in range(55)]
    config = make_config(services={name: {"image": "base", "capacity": 1} for name in names})

    assert ensure_seeded(cloud, config, base_ami) is True

    paginator = cloud.client("autoscaling").get_paginator("describe_auto_scaling_groups")
    groups = [group for page in paginator.paginate() for group in page["AutoScalingGroups"]]
    assert sorted(group["AutoScalingGroupName"] for group in groups) == [
        f"{name}-blue" for name in names
    ]
    counting = Cloud(cloud.region, endpoint_url=cloud.endpoint_url)
    calls = _count_calls(counting)
    assert ensure_seeded(counting, config, base_ami) is False
    assert calls == ["DescribeLaunchTemplates"]


def test_a_cloud_seeded_by_an_earlier_version_is_not_seeded_again(cloud, config, base_ami):
    # Earlier versions tagged the seed VPC per service, and their launch templates not at all.
    assert ensure_seeded(cloud, config, base_ami) is True
    ec2 = cloud.client("ec2")
    template = ec2.describe_launch_templates(LaunchTemplateNames=["demo"])["LaunchTemplates"][0]
    ec2.delete_tags(Resources=[template["LaunchTemplateId"]], Tags=[{"Key": "bake:seeded"}])
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "tag:bake:local-seed", "Values": ["true"]}])[
        "Vpcs"
    ]
    ec2.create_tags(Resources=[vpc["VpcId"]], Tags=[{"Key": "bake:seeded:demo", "Value": "true"}])

    assert ensure_seeded(cloud, config, base_ami) is False
    groups = cloud.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    assert [group["AutoScalingGroupName"] for group in groups] == ["demo-blue"]
