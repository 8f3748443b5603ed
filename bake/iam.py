"""The least-privilege IAM policy for running the pipeline on AWS, from the config.

Every action is named; no statement uses a wildcard action. The statements follow the pipeline's
parts, so a reader can see why each permission is there. Only reads (Describe*, Get*, List*) are
allowed on every resource; every change is scoped by the ARNs the config names (the load balancer,
its listeners and rules, the colours' target groups and Auto Scaling groups, the SSM parameters,
the lock table, the keys and buckets) or by the tags the toolkit and its Packer template set:
`bake:run-id` on build and verification instances and their volumes, `bake:image` on AMIs and their
snapshots. The account is not in the config, so every ARN has `*` in its account field.

Tests run a whole pipeline as an IAM user holding only this policy (moto enforces its actions) and
check every resource each call touched against these ARNs and conditions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bake import releases
from bake.aws.images import PARAMETER_PREFIX, parameter_name
from bake.config import COLORS, Config, ServiceConfig

# The tag every build and verification instance (and its volumes) is launched with.
RUN_TAG = "bake:run-id"
# The tag every AMI and snapshot the toolkit tags carries.
IMAGE_TAG = "bake:image"
# Names of the temporary key pairs: Packer's own, and the verification instance's.
KEY_PAIRS = ("packer_*", "goldenbake-verify-*")
# The tag on a service's load balancer that records its roll-out.
ROLLOUT_TAG = "bake:rollout:{service}"

# Packer's amazon-ebs builder and the verification stage: what they read.
BUILD_READS = [
    "ec2:DescribeImageAttribute",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeInstances",
    "ec2:DescribeKeyPairs",
    "ec2:DescribeRegions",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSnapshots",
    "ec2:DescribeSubnets",
    "ec2:DescribeTags",
    "ec2:DescribeVolumes",
    "ec2:DescribeVpcs",
]
# The temporary key pair and security group of a build or verification instance. Packer's group
# carries no tag, so groups are scoped to the region only.
TEMPORARY_KEY_PAIRS = ["ec2:CreateKeyPair", "ec2:DeleteKeyPair"]
TEMPORARY_GROUPS = [
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:CreateSecurityGroup",
    "ec2:DeleteSecurityGroup",
]
# What may only be done to instances and volumes launched with the run tag.
TAGGED_INSTANCES = [
    "ec2:AttachVolume",
    "ec2:CreateImage",
    "ec2:CreateSnapshot",
    "ec2:DeleteVolume",
    "ec2:DetachVolume",
    "ec2:ModifyInstanceAttribute",
    "ec2:StopInstances",
    "ec2:TerminateInstances",
]
# AMIs and snapshots: made, encrypted, copied, shared, and deregistered (Packer's intermediate
# unencrypted AMI carries no tag, so AMIs are scoped to the build and copy regions).
IMAGES = [
    "ec2:CopyImage",
    "ec2:CreateImage",
    "ec2:CreateSnapshot",
    "ec2:DeleteSnapshot",
    "ec2:DeregisterImage",
    "ec2:DisableImage",
    "ec2:EnableImageDeprecation",
    "ec2:ModifyImageAttribute",
    "ec2:ModifySnapshotAttribute",
    "ec2:RegisterImage",
]
# The requests whose tags are given as the resource is created (the `ec2:CreateAction` condition).
TAG_ON_CREATE = ["CreateKeyPair", "CreateSecurityGroup", "RunInstances"]

# The blue/green swap: reads, launch template versions, the colours' groups, the traffic.
ROLL_OUT_READS = [
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLifecycleHooks",
    "autoscaling:DescribeLoadBalancerTargetGroups",
    "autoscaling:DescribePolicies",
    "cloudwatch:DescribeAlarms",
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:DescribeLaunchTemplates",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeRules",
    "elasticloadbalancing:DescribeTags",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
]
LAUNCH_TEMPLATE_VERSIONS = ["ec2:CreateLaunchTemplateVersion", "ec2:DeleteLaunchTemplateVersions"]
GROUPS = [
    "autoscaling:AttachLoadBalancerTargetGroups",
    "autoscaling:CreateAutoScalingGroup",
    "autoscaling:CreateOrUpdateTags",
    "autoscaling:DeleteAutoScalingGroup",
    "autoscaling:PutLifecycleHook",
    "autoscaling:PutScalingPolicy",
    "autoscaling:SetDesiredCapacity",
    "autoscaling:UpdateAutoScalingGroup",
]
ROLLOUT_RECORD = ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"]

# `bake retire`: which AMIs a launch template or configuration in use references. Deregistering
# AMIs and deleting their snapshots is in IMAGES.
RETIRE_READS = [
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeLaunchConfigurations",
    "ec2:DescribeImages",
    "ec2:DescribeLaunchTemplateVersions",
]

DOCTOR = ["sts:GetCallerIdentity"]

# Under ssh_interface = "session_manager" without a build_instance_profile, Packer makes the build
# instance a temporary profile (role, inline policy, profile, all named packer-*) and removes it.
TEMPORARY_PROFILE = [
    "iam:AddRoleToInstanceProfile",
    "iam:CreateInstanceProfile",
    "iam:CreateRole",
    "iam:DeleteInstanceProfile",
    "iam:DeleteRole",
    "iam:DeleteRolePolicy",
    "iam:GetInstanceProfile",
    "iam:GetRole",
    "iam:PutRolePolicy",
    "iam:RemoveRoleFromInstanceProfile",
]
PACKER_TEMPORARY_NAME = "packer-*"
# The Session Manager documents sessions are started with: verification's SSH (bake.aws.ssm_proxy)
# and Packer's port forwarding tunnel.
SESSION_DOCUMENTS = ("AWS-StartSSHSession", "AWS-StartPortForwardingSession")

# Leases of [aws] lock_table: taken, renewed and released with conditional writes.
LEASES = [
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
]

KMS = [
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:Encrypt",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
]


@dataclass(frozen=True)
class Scope:
    """Where the pipeline works, for building ARNs: the partition, the region of the services and
    builds, and every region an AMI is made in (the build region and the copy regions)."""

    partition: str
    region: str
    image_regions: tuple[str, ...]

    @classmethod
    def of(cls, config: Config) -> Scope:
        region = config.aws.region
        copies = {copy for image in config.images.values() for copy in image.aws.ami_regions}
        return cls(_partition(region), region, (region, *sorted(copies - {region})))

    def arn(self, service: str, resource: str, *, region: str | None = None) -> str:
        """An ARN in this scope's region (or `region`) of any account."""
        return f"arn:{self.partition}:{service}:{region or self.region}:*:{resource}"

    def ec2(self, *resources: str) -> list[str]:
        return [self.arn("ec2", resource) for resource in resources]

    def images(self) -> list[str]:
        """AMIs and snapshots in every image region; their ARNs name no account."""
        return [
            f"arn:{self.partition}:ec2:{region}::{kind}/*"
            for region in self.image_regions
            for kind in ("image", "snapshot")
        ]


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _statement(
    sid: str,
    actions: list[str],
    resource: str | list[str] = "*",
    condition: dict[str, Any] | None = None,
) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(set(actions)),
        "Resource": resource,
    }
    if condition:
        statement["Condition"] = condition
    return statement


def _tagged(context: str, key: str) -> dict[str, Any]:
    """The condition that the request (or the resource) carries the tag `key`."""
    return {"Null": {f"aws:{context}/{key}": "false"}}


def build_and_verify(config: Config, scope: Scope) -> list[dict[str, Any]]:
    """Packer's amazon-ebs builder and the throwaway verification instance: each instance with
    its temporary key pair and security group; the AMI and its snapshots, copies, sharing, and
    deregistering (Packer's intermediate AMI, and old AMIs that `bake retire` removes)."""
    sid = "BuildImagesWithPacker"
    key_pairs = scope.ec2(*(f"key-pair/{name}" for name in KEY_PAIRS))
    return [
        _statement(sid, BUILD_READS),
        # RunInstances: the instance and its volumes must carry the run tag; the AMI, subnet,
        # group and network interface it uses may be any in the region.
        _statement(
            f"{sid}LaunchTaggedInstances",
            ["ec2:RunInstances"],
            scope.ec2("instance/*", "volume/*"),
            _tagged("RequestTag", RUN_TAG),
        ),
        _statement(
            f"{sid}LaunchFrom",
            ["ec2:RunInstances"],
            [
                *scope.ec2("subnet/*", "security-group/*", "network-interface/*"),
                *key_pairs,
                f"arn:{scope.partition}:ec2:{scope.region}::image/*",
            ],
        ),
        _tag_on_create(f"{sid}TagOnCreate", scope),
        _statement(
            f"{sid}TemporaryAccess",
            [*TEMPORARY_KEY_PAIRS, *TEMPORARY_GROUPS],
            # CreateSecurityGroup also names the VPC the group is made in.
            [*key_pairs, *scope.ec2("security-group/*", "vpc/*")],
        ),
        _statement(
            f"{sid}OnTaggedInstances",
            TAGGED_INSTANCES,
            scope.ec2("instance/*", "volume/*"),
            _tagged("ResourceTag", RUN_TAG),
        ),
        _statement(f"{sid}Images", IMAGES, scope.images()),
        _statement(
            "TagImagesWithTheirLineage",
            ["ec2:CreateTags"],
            scope.images(),
            {"StringEquals": {f"aws:RequestTag/{IMAGE_TAG}": sorted(config.images)}},
        ),
    ]


def _tag_on_create(sid: str, scope: Scope) -> dict[str, Any]:
    """Tags given in the request that creates an instance, volume, key pair or group."""
    return _statement(
        sid,
        ["ec2:CreateTags"],
        scope.ec2("instance/*", "volume/*", "key-pair/*", "security-group/*"),
        {"StringEquals": {"ec2:CreateAction": TAG_ON_CREATE}},
    )


def bases_and_publishing(config: Config, scope: Scope) -> list[dict[str, Any]]:
    """Bases named by SSM parameters (public ones included) and the images' published
    parameters, which `image:` bases, retire and swap read."""
    bases = sorted(
        {
            spec.value.lstrip("/")
            for image in config.images.values()
            if (spec := image.base_for("aws")).kind == "ssm"
        }
    )
    published = sorted(
        (region, parameter_name(name).lstrip("/"))
        for name, image in config.images.items()
        for region in {scope.region, *image.aws.ami_regions}
    )
    return [
        _statement(
            "ReadBasesAndPublishedImages",
            ["ssm:GetParameter"],
            [
                *(scope.arn("ssm", f"parameter/{name}") for name in bases),
                *(
                    scope.arn("ssm", f"parameter{PARAMETER_PREFIX}*", region=region)
                    for region in scope.image_regions
                ),
            ],
        ),
        _statement(
            "PublishLatestImages",
            ["ssm:PutParameter"],
            [scope.arn("ssm", f"parameter/{name}", region=region) for region, name in published],
        ),
    ]


def parameter_shares(config: Config, scope: Scope) -> list[dict[str, Any]]:
    """share_parameter = "ram": each shared image's parameter, in each region it is published in,
    shared through its RAM share, with the image's own accounts and organizations only (the
    conditions hold the share to those parameters and principals); RAM sets the parameter's
    resource policy in the caller's name."""
    if not config.aws.share_parameter:
        return []
    shared = {
        name: image
        for name, image in sorted(config.images.items())
        if image.aws.ami_users or image.aws.ami_org_arns
    }
    parameters = sorted(
        scope.arn("ssm", f"parameter/{parameter_name(name).lstrip('/')}", region=region)
        for name, image in shared.items()
        for region in {scope.region, *image.aws.ami_regions}
    )
    principals = sorted(
        {p for image in shared.values() for p in (*image.aws.ami_users, *image.aws.ami_org_arns)}
    )
    regions = sorted(
        {r for image in shared.values() for r in (scope.region, *image.aws.ami_regions)}
    )
    shares = [scope.arn("ram", "resource-share/*", region=region) for region in regions]
    sid = "ShareLatestImagesThroughRam"
    return [
        _statement(f"{sid}Reads", ["ram:GetResourceShareAssociations", "ram:GetResourceShares"]),
        _statement(
            sid,
            [
                "ram:AssociateResourceShare",
                "ram:CreateResourceShare",
                "ram:DisassociateResourceShare",
            ],
            shares,
            {
                "ForAllValues:ArnLike": {"ram:ResourceArn": parameters},
                "ForAllValues:StringEquals": {"ram:Principal": principals},
            },
        ),
        _statement(
            f"{sid}Policies",
            ["ssm:DeleteResourcePolicy", "ssm:GetResourcePolicies", "ssm:PutResourcePolicy"],
            parameters,
        ),
    ]


def roll_out(config: Config, scope: Scope) -> list[dict[str, Any]]:
    """The blue/green swap: launch template versions, the colours' groups and target groups, the
    listener's (or rule's) weights, and the roll-out record on the load balancer."""
    services = sorted(config.services.values(), key=lambda service: service.name)
    if not services:
        return []
    sid = "RollOutBlueGreen"
    balancers = sorted({service.load_balancer for service in services})
    elb = "elasticloadbalancing"
    return [
        _statement(sid, ROLL_OUT_READS),
        _statement(
            f"{sid}LaunchTemplates", LAUNCH_TEMPLATE_VERSIONS, scope.ec2("launch-template/*")
        ),
        _statement(
            f"{sid}LaunchFromTemplates",
            ["ec2:RunInstances"],
            [
                *scope.ec2(
                    "launch-template/*",
                    "instance/*",
                    "volume/*",
                    "network-interface/*",
                    "subnet/*",
                    "security-group/*",
                    "key-pair/*",
                ),
                f"arn:{scope.partition}:ec2:{scope.region}::image/*",
            ],
            {"ArnLike": {"ec2:LaunchTemplate": scope.arn("ec2", "launch-template/*")}},
        ),
        _statement(f"{sid}Groups", GROUPS, _group_arns(scope, services)),
        _statement(
            f"{sid}TargetGroups",
            [f"{elb}:CreateTargetGroup"],
            [
                scope.arn(elb, f"targetgroup/{service.names(color).target_group}/*")
                for service in services
                for color in COLORS
            ],
        ),
        _statement(
            f"{sid}Traffic",
            [f"{elb}:ModifyListener", f"{elb}:ModifyRule"],
            [
                scope.arn(elb, f"{kind}/app/{name}/*")
                for name in balancers
                for kind in ("listener", "listener-rule")
            ],
        ),
        _statement(
            f"{sid}Record",
            ROLLOUT_RECORD,
            [scope.arn(elb, f"loadbalancer/app/{name}/*") for name in balancers],
            {
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": [
                        ROLLOUT_TAG.format(service=service.name) for service in services
                    ]
                }
            },
        ),
    ]


def _group_arns(scope: Scope, services: list[ServiceConfig]) -> list[str]:
    return [
        scope.arn("autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{service.names(c).asg}")
        for service in services
        for c in COLORS
    ]


def retire(config: Config, scope: Scope) -> list[dict[str, Any]]:
    return [_statement("RetireOldImages", RETIRE_READS)]


def pass_roles(config: Config, scope: Scope) -> list[dict[str, Any]]:
    """The roles of the services' instance profiles and of the build instance profile, passed to
    EC2 only; Packer reads the build profile before it launches with it."""
    roles = {role for service in config.services.values() if (role := service.role)}
    if config.aws.build_role:
        roles.add(config.aws.build_role)
    if not roles:
        return []
    statements = [
        _statement(
            "PassInstanceRolesToEc2",
            ["iam:PassRole"],
            [f"arn:{scope.partition}:iam::*:role/{role}" for role in sorted(roles)],
            _passed_to_ec2(),
        )
    ]
    if config.aws.build_instance_profile:
        profile = (
            f"arn:{scope.partition}:iam::*:instance-profile/{config.aws.build_instance_profile}"
        )
        statements.append(
            _statement("ReadTheBuildInstanceProfile", ["iam:GetInstanceProfile"], profile)
        )
    return statements


def _passed_to_ec2() -> dict[str, Any]:
    return {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


def sessions(config: Config, scope: Scope) -> list[dict[str, Any]]:
    """SSH through Session Manager (ssh_interface = "session_manager"): sessions to build and
    verification instances only (their run tag), with the two documents Packer and verification
    use; whether an instance's agent registered; and Packer's temporary instance profile for the
    build instance when no build_instance_profile is named (a role named packer-*, which it gives
    the SSM agent's policy and passes to EC2: name a profile to grant none of this)."""
    if not config.aws.session_manager:
        return []
    sid = "ReachInstancesThroughSessionManager"
    documents = [
        f"arn:{scope.partition}:ssm:{scope.region}::document/{name}" for name in SESSION_DOCUMENTS
    ]
    statements = [
        _statement(f"{sid}ReadAgents", ["ssm:DescribeInstanceInformation"]),
        _statement(
            sid,
            ["ssm:StartSession"],
            scope.ec2("instance/*"),
            {"Null": {f"ssm:resourceTag/{RUN_TAG}": "false"}},
        ),
        _statement(f"{sid}Documents", ["ssm:StartSession"], documents),
        _statement(f"{sid}End", ["ssm:TerminateSession"], scope.arn("ssm", "session/*")),
    ]
    if config.aws.build_instance_profile:
        return statements
    role = f"arn:{scope.partition}:iam::*:role/{PACKER_TEMPORARY_NAME}"
    profile = f"arn:{scope.partition}:iam::*:instance-profile/{PACKER_TEMPORARY_NAME}"
    return [
        *statements,
        _statement("BuildInstanceTemporaryProfile", TEMPORARY_PROFILE, [role, profile]),
        # AddRoleToInstanceProfile passes the role as well, naming no service to pass it to.
        _statement("PassTheTemporaryRole", ["iam:PassRole"], role),
    ]


def encryption(config: Config, scope: Scope) -> list[dict[str, Any]]:
    """Customer keys of encrypted AMIs (EBS's AWS-managed key needs no IAM permission of the
    caller): by key ARN, and keys named by an alias by that alias."""
    keys: set[str] = set()
    aliases: set[tuple[str, str]] = set()
    for image in config.images.values():
        given = [(scope.region, image.aws.kms_key_id), *image.aws.region_kms_key_ids.items()]
        for region, key in given:
            if key is None:
                continue
            if "alias/" in key:
                aliases.add((region, "alias/" + key.split("alias/", 1)[1]))
            elif key.startswith("arn:"):
                keys.add(key)
            else:
                keys.add(scope.arn("kms", f"key/{key}", region=region))
    statements = []
    if keys:
        statements.append(_statement("EncryptImages", KMS, sorted(keys)))
    if aliases:
        statements.append(
            _statement(
                "EncryptImagesWithAliasedKeys",
                KMS,
                sorted({scope.arn("kms", "key/*", region=region) for region, _ in aliases}),
                {
                    "ForAnyValue:StringEquals": {
                        "kms:ResourceAliases": sorted(a for _, a in aliases)
                    }
                },
            )
        )
    return statements


def leases(config: Config, scope: Scope) -> list[dict[str, Any]]:
    if not config.aws.lock_table:
        return []
    table = scope.arn("dynamodb", f"table/{config.aws.lock_table}")
    return [_statement("HoldLeasesInTheLockTable", LEASES, table)]


def chef_packages(config: Config, scope: Scope) -> list[dict[str, Any]]:
    buckets = sorted(
        {
            url.removeprefix("s3://").split("/")[0]
            for image in config.images.values()
            if (url := image.s3_package_url)
        }
    )
    if not buckets:
        return []
    resources = [f"arn:{scope.partition}:s3:::{bucket}/*" for bucket in buckets]
    return [_statement("ReadChefPackages", ["s3:GetObject"], resources)]


def sboms(config: Config, scope: Scope) -> list[dict[str, Any]]:
    """Publishing each AMI's SBOM under [aws] sbom_store, and reading it back to plan."""
    if not config.aws.sbom_store:
        return []
    bucket, _, prefix = config.aws.sbom_store.removeprefix("s3://").partition("/")
    where = f"arn:{scope.partition}:s3:::{bucket}/{prefix.strip('/') + '/' if prefix else ''}*"
    return [_statement("PublishSboms", ["s3:GetObject", "s3:PutObject"], where)]


def release_stores(config: Config, scope: Scope) -> list[dict[str, Any]]:
    """`bake release`: storing each service's releases under its `releases`, and reading them
    back (HeadObject, to refuse other content under a stored version)."""
    resources = sorted(
        {
            f"arn:{scope.partition}:s3:::{bucket}/{key.rpartition('/')[0]}/*"
            for service in config.services.values()
            if service.releases
            for bucket, key in [releases.store_key(service.releases, service.name, "v")]
        }
    )
    if not resources:
        return []
    return [_statement("StoreReleases", ["s3:GetObject", "s3:PutObject"], resources)]


def proofs(config: Config, scope: Scope) -> list[dict[str, Any]]:
    """`bake rollout`'s proof: what each instance of a service runs, over SSM Run Command."""
    if not config.services:
        return []
    document = f"arn:{scope.partition}:ssm:{config.aws.region}::document/AWS-RunShellScript"
    return [
        _statement(
            "ProveInstancesOverRunCommand",
            ["ssm:SendCommand"],
            [document, *scope.ec2("instance/*")],
        ),
        _statement("ReadProofAnswers", ["ssm:GetCommandInvocation"]),
    ]


def notifications(config: Config, scope: Scope) -> list[dict[str, Any]]:
    if not config.notify.sns_topic:
        return []
    return [_statement("NotifyRollouts", ["sns:Publish"], config.notify.sns_topic)]


def credentials(config: Config, scope: Scope) -> list[dict[str, Any]]:
    statements = [_statement("CheckCredentials", DOCTOR)]
    if config.aws.consumer_roles:
        statements.append(
            _statement(
                "AssumeConsumerAccountRoles",
                ["sts:AssumeRole"],
                sorted(config.aws.consumer_roles.values()),
            )
        )
    return statements


# The pipeline's parts, in the order a reader meets them.
PARTS = (
    build_and_verify,
    bases_and_publishing,
    parameter_shares,
    roll_out,
    retire,
    credentials,
    pass_roles,
    sessions,
    encryption,
    leases,
    chef_packages,
    sboms,
    release_stores,
    proofs,
    notifications,
)


def policy(config: Config) -> dict[str, Any]:
    """The policy document for the images and services in `config`."""
    scope = Scope.of(config)
    statements = [statement for part in PARTS for statement in part(config, scope)]
    return {"Version": "2012-10-17", "Statement": statements}


def describe(statement: dict[str, Any]) -> str:
    """One line for a statement: its actions, where, and on what condition."""
    resources = statement["Resource"]
    where = resources if isinstance(resources, str) else ", ".join(resources)
    keys = [key for pairs in statement.get("Condition", {}).values() for key in pairs]
    when = f" (conditions on {', '.join(keys)})" if keys else ""
    count = len(statement["Action"])
    return f"{statement['Sid']}: {count} action{'s' * (count != 1)} on {where}{when}"


def actions(document: dict[str, Any]) -> set[str]:
    """Every action a policy document allows."""
    return {action for statement in document["Statement"] for action in statement["Action"]}
