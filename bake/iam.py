"""The least-privilege IAM policy for running the pipeline on AWS, from the config.

Every action is named; no statement uses a wildcard action. The statements follow the pipeline's
parts, so a reader can see why each permission is there. A test records every call the pipeline
and Packer make against moto and checks this policy covers each of them.
"""

from __future__ import annotations

from typing import Any

from bake.config import Config

# Packer's amazon-ebs builder: the build instance, its temporary key and group, the AMI and its
# snapshots, copies to other regions, sharing.
PACKER_BUILD = [
    "ec2:AttachVolume",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:CopyImage",
    "ec2:CreateImage",
    "ec2:CreateKeyPair",
    "ec2:CreateSecurityGroup",
    "ec2:CreateSnapshot",
    "ec2:CreateTags",
    "ec2:CreateVolume",
    "ec2:DeleteKeyPair",
    "ec2:DeleteSecurityGroup",
    "ec2:DeleteSnapshot",
    "ec2:DeleteVolume",
    "ec2:DeregisterImage",
    "ec2:DescribeImageAttribute",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeInstances",
    "ec2:DescribeRegions",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSnapshots",
    "ec2:DescribeSubnets",
    "ec2:DescribeTags",
    "ec2:DescribeVolumes",
    "ec2:DescribeVpcs",
    "ec2:DetachVolume",
    "ec2:ModifyImageAttribute",
    "ec2:ModifyInstanceAttribute",
    "ec2:ModifySnapshotAttribute",
    "ec2:RegisterImage",
    "ec2:RunInstances",
    "ec2:StopInstances",
    "ec2:TerminateInstances",
]

# The throwaway verification instance, and resolving bases.
VERIFY = [
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:CreateKeyPair",
    "ec2:CreateSecurityGroup",
    "ec2:CreateTags",
    "ec2:DeleteKeyPair",
    "ec2:DeleteSecurityGroup",
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeKeyPairs",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
    "ec2:RunInstances",
    "ec2:TerminateInstances",
]

# Lineage tags and the published parameter; bases named by SSM parameters (public ones included).
REGISTER = ["ec2:CreateTags", "ec2:DescribeImages", "ssm:GetParameter"]
PUBLISH = ["ssm:GetParameter", "ssm:PutParameter"]

# The blue/green swap: launch template versions, the standby group, the listener's weights.
ROLL_OUT = [
    "autoscaling:AttachLoadBalancerTargetGroups",
    "autoscaling:CreateAutoScalingGroup",
    "autoscaling:CreateOrUpdateTags",
    "autoscaling:DeleteAutoScalingGroup",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLifecycleHooks",
    "autoscaling:DescribeLoadBalancerTargetGroups",
    "autoscaling:DescribePolicies",
    "autoscaling:PutLifecycleHook",
    "autoscaling:PutScalingPolicy",
    "autoscaling:SetDesiredCapacity",
    "autoscaling:UpdateAutoScalingGroup",
    "ec2:CreateLaunchTemplateVersion",
    "ec2:CreateTags",
    "ec2:DeleteLaunchTemplateVersions",
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:DescribeLaunchTemplates",
    "ec2:RunInstances",
    "elasticloadbalancing:CreateTargetGroup",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeRules",
    "elasticloadbalancing:DescribeTags",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:ModifyListener",
    "elasticloadbalancing:ModifyRule",
    "elasticloadbalancing:AddTags",
]

# `bake retire`: old AMIs and their snapshots, never one a launch template in use references.
RETIRE = [
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeLaunchConfigurations",
    "ec2:DeleteSnapshot",
    "ec2:DeregisterImage",
    "ec2:DescribeImages",
    "ec2:DescribeLaunchTemplateVersions",
    "ssm:GetParameter",
]

DOCTOR = ["sts:GetCallerIdentity"]

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


def _kms_keys(config: Config) -> list[str]:
    keys = set()
    for image in config.images.values():
        if image.aws.kms_key_id:
            keys.add(image.aws.kms_key_id)
        keys.update(image.aws.region_kms_key_ids.values())
    return sorted(keys)


def policy(config: Config) -> dict[str, Any]:
    """The policy document for the images and services in `config`."""
    images = sorted(config.images)
    statements = [
        _statement("BuildImagesWithPacker", PACKER_BUILD),
        _statement("VerifyOnThrowawayInstances", VERIFY),
        _statement("ReadBasesAndTagImages", REGISTER),
        _statement(
            "PublishLatestImages",
            PUBLISH,
            [f"arn:aws:ssm:*:*:parameter/bake/images/{name}/latest" for name in images],
        ),
        _statement("RollOutBlueGreen", ROLL_OUT),
        _statement("RetireOldImages", RETIRE),
        _statement("CheckCredentials", DOCTOR),
        _statement(
            "PassInstanceRolesToEc2",
            ["iam:PassRole"],
            "*",
            {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        ),
    ]
    keys = _kms_keys(config)
    # EBS's AWS-managed key needs no IAM permission of the caller; customer keys do.
    if keys:
        arns = [key for key in keys if key.startswith("arn:")]
        statements.append(
            _statement(
                "EncryptImages",
                KMS,
                arns if arns and len(arns) == len(keys) else "*",
            )
        )
    if config.aws.lock_table:
        statements.append(
            _statement(
                "HoldLeasesInTheLockTable",
                LEASES,
                f"arn:aws:dynamodb:{config.aws.region}:*:table/{config.aws.lock_table}",
            )
        )
    buckets = sorted(
        {
            url.removeprefix("s3://").split("/")[0]
            for image in config.images.values()
            if (url := image.s3_package_url)
        }
    )
    if buckets:
        statements.append(
            _statement(
                "ReadChefPackages",
                ["s3:GetObject"],
                [f"arn:aws:s3:::{bucket}/*" for bucket in buckets],
            )
        )
    return {"Version": "2012-10-17", "Statement": statements}


def actions(document: dict[str, Any]) -> set[str]:
    """Every action a policy document allows."""
    return {action for statement in document["Statement"] for action in statement["Action"]}
