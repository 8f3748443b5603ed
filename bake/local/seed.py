"""Seeding the local cloud: a network, then the blue environment of every configured service.

moto keeps nothing across restarts, so every command that needs the local cloud calls
`ensure_seeded`. The launch template of each service seeded in full carries a `bake:seeded` tag
naming the service, so an already seeded cloud costs one describe call however many services it
has (a resource holds at most 50 tags, so the seed VPC's `bake:seeded:<service>` tags of earlier
versions are still read but no longer written); a partly seeded one (a crash mid-seed) is
completed, each resource found before it is created.
"""

from __future__ import annotations

from typing import Any

from bake.aws import autoscaling, elbv2, launch_templates
from bake.aws.session import Cloud
from bake.aws.tags import tags_of
from bake.config import Config, ServiceConfig

SEED_TAG = "bake:local-seed"
SEEDED_TAG = "bake:seeded"
SEEDED_PREFIX = "bake:seeded:"  # on the seed VPC, written by earlier versions
VPC_CIDR = "10.0.0.0/16"
SECURITY_GROUP = "bake-local"
DEFAULT_INSTANCE_TYPE = "t3.micro"
# The instance profile of the seeded launch templates (unless a service names its own): its role's
# credentials are what a machine signs its release download with.
LOCAL_PROFILE = "goldenbake-local"
EC2_TRUST = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
    '"Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}'
)
# The seeded target groups' health check: GET /health every 5 s (AWS's shortest interval); two
# answers in a row make a target healthy or unhealthy, so a booted machine serves within seconds.
HEALTH_CHECK = {
    "HealthCheckProtocol": "HTTP",
    "HealthCheckPath": "/health",
    "HealthCheckIntervalSeconds": 5,
    "HealthCheckTimeoutSeconds": 3,
    "HealthyThresholdCount": 2,
    "UnhealthyThresholdCount": 2,
    "Matcher": {"HttpCode": "200"},
}


def _seed_vpc(cloud: Cloud) -> dict[str, Any] | None:
    vpcs = cloud.client("ec2").describe_vpcs(
        Filters=[{"Name": f"tag:{SEED_TAG}", "Values": ["true"]}]
    )["Vpcs"]
    return vpcs[0] if vpcs else None


def _create_vpc(cloud: Cloud) -> str:
    return cloud.client("ec2").create_vpc(
        CidrBlock=VPC_CIDR,
        TagSpecifications=[
            {
                "ResourceType": "vpc",
                "Tags": [
                    {"Key": SEED_TAG, "Value": "true"},
                    {"Key": "Name", "Value": "bake-local"},
                ],
            }
        ],
    )["Vpc"]["VpcId"]


def _ensure_subnets(cloud: Cloud, vpc_id: str) -> list[str]:
    """One subnet in each of the region's first two availability zones."""
    ec2 = cloud.client("ec2")
    zones = [zone["ZoneName"] for zone in ec2.describe_availability_zones()["AvailabilityZones"]]
    existing = {
        subnet["AvailabilityZone"]: subnet["SubnetId"]
        for subnet in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
            "Subnets"
        ]
    }
    subnets = []
    for index, zone in enumerate(sorted(zones)[:2]):
        if zone not in existing:
            existing[zone] = ec2.create_subnet(
                VpcId=vpc_id, CidrBlock=f"10.0.{index}.0/24", AvailabilityZone=zone
            )["Subnet"]["SubnetId"]
        subnets.append(existing[zone])
    return subnets


def _ensure_security_group(cloud: Cloud, vpc_id: str) -> str:
    ec2 = cloud.client("ec2")
    found = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": [SECURITY_GROUP]},
        ]
    )["SecurityGroups"]
    if found:
        return found[0]["GroupId"]
    return ec2.create_security_group(
        GroupName=SECURITY_GROUP, Description="goldenbake local services", VpcId=vpc_id
    )["GroupId"]


def _ensure_traffic(
    cloud: Cloud, service: ServiceConfig, vpc_id: str, subnets: list[str], security_group: str
) -> str:
    """The load balancer, blue target group and listener of a service; the blue target group ARN."""
    blue = service.names("blue")
    target_group = elbv2.find_target_group(cloud, blue.target_group) or elbv2.create_target_group(
        cloud,
        blue.target_group,
        Protocol="HTTP",
        Port=80,
        VpcId=vpc_id,
        TargetType="instance",
        **HEALTH_CHECK,
    )
    load_balancer = elbv2.find_load_balancer(
        cloud, service.load_balancer
    ) or elbv2.create_load_balancer(cloud, service.load_balancer, subnets, [security_group])
    arn = load_balancer["LoadBalancerArn"]
    if elbv2.find_listener(cloud, arn, service.listener_port) is None:
        elbv2.create_forward_listener(
            cloud, arn, service.listener_port, target_group["TargetGroupArn"]
        )
    return target_group["TargetGroupArn"]


def _ensure_launch_template(
    cloud: Cloud, service: ServiceConfig, base_ami: str, security_group: str
) -> tuple[str, int]:
    """The service's launch template; its id and the version the blue group runs."""
    template = launch_templates.find(cloud, service.launch_template)
    if template:
        return template["LaunchTemplateId"], int(template["DefaultVersionNumber"])
    profile = service.instance_profile or LOCAL_PROFILE
    _ensure_instance_profile(cloud, profile)
    data = {
        "ImageId": base_ami,
        "IamInstanceProfile": {"Name": profile},
        "InstanceType": service.instance_type or DEFAULT_INSTANCE_TYPE,
        "SecurityGroupIds": [security_group],
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": [{"Key": "bake:service", "Value": service.name}]}
        ],
    }
    created = launch_templates.create(cloud, service.launch_template, data, "seeded by bake")
    return created["LaunchTemplateId"], int(created["LatestVersionNumber"])


def _ensure_instance_profile(cloud: Cloud, name: str) -> None:
    """An instance profile holding a role of the same name, as the console makes them."""
    iam = cloud.client("iam")
    try:
        iam.get_instance_profile(InstanceProfileName=name)
        return
    except iam.exceptions.NoSuchEntityException:
        pass
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=EC2_TRUST)
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)


def _seed_service(
    cloud: Cloud,
    service: ServiceConfig,
    base_ami: str,
    network: tuple[str, list[str], str],
) -> None:
    vpc_id, subnets, security_group = network
    target_group_arn = _ensure_traffic(cloud, service, vpc_id, subnets, security_group)
    template_id, version = _ensure_launch_template(cloud, service, base_ami, security_group)
    if autoscaling.find_group(cloud, service.names("blue").asg) is None:
        capacity = service.capacity
        autoscaling.create_group(
            cloud,
            service.names("blue").asg,
            launch_template_id=template_id,
            launch_template_version=version,
            capacity=(capacity.min, capacity.desired, capacity.max),
            subnets=",".join(subnets),
            target_group_arns=[target_group_arn],
            health_check_type="ELB",
            health_check_grace_period=60,
            tags={"bake:service": service.name, "bake:color": "blue"},
        )
    cloud.client("ec2").create_tags(
        Resources=[template_id], Tags=[{"Key": SEEDED_TAG, "Value": service.name}]
    )


def _seeded(cloud: Cloud, config: Config) -> set[str]:
    """The services seeded in full: those whose launch template carries the `bake:seeded` tag."""
    paginator = cloud.client("ec2").get_paginator("describe_launch_templates")
    # Pages of 200, the most EC2 gives (moto's default page of 15 comes without a next token).
    pages = paginator.paginate(
        Filters=[{"Name": "tag-key", "Values": [SEEDED_TAG]}], PaginationConfig={"PageSize": 200}
    )
    tagged = {
        template["LaunchTemplateName"] for page in pages for template in page["LaunchTemplates"]
    }
    return {name for name, service in config.services.items() if service.launch_template in tagged}


def ensure_seeded(cloud: Cloud, config: Config, base_ami: str) -> bool:
    """Give every configured service a blue environment on the local cloud; True if it seeded."""
    seeded = _seeded(cloud, config)
    if all(name in seeded for name in config.services):
        return False
    vpc = _seed_vpc(cloud)
    seeded |= {
        key.removeprefix(SEEDED_PREFIX)
        for key in tags_of(vpc or {})
        if key.startswith(SEEDED_PREFIX)
    }
    missing = [service for name, service in config.services.items() if name not in seeded]
    if vpc and not missing:
        return False
    vpc_id = vpc["VpcId"] if vpc else _create_vpc(cloud)
    network = (vpc_id, _ensure_subnets(cloud, vpc_id), _ensure_security_group(cloud, vpc_id))
    for service in missing:
        _seed_service(cloud, service, base_ami, network)
    return True
