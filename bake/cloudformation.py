"""The fleet's CloudFormation template: the lock table and the role `bake` runs as, holding the
least-privilege policy of `bake.iam` for the config.

A static template cannot compute that policy, so `bake iam-policy --format cloudformation` prints
this one from bake.toml; the per-service template (examples/cloudformation/service.yaml) is static.
The YAML is written here, in block style with quoted strings wherever a plain one could be misread,
so the printed template is the same on every machine and needs no YAML library.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bake import iam
from bake.aws import managed_instances
from bake.config import Config
from bake.errors import InputError

# The lock table the template creates when bake.toml names none.
DEFAULT_LOCK_TABLE = "goldenbake-locks"
# The attribute of a lease that holds when it lapses (epoch seconds): the table's TTL attribute.
LEASE_EXPIRES = "Expires"
# What IAM allows, counted without whitespace: all of a role's inline policies together, and one
# managed policy.
INLINE_POLICY_LIMIT = 10_240
MANAGED_POLICY_LIMIT = 6_144
# How many managed policies a role may hold (IAM's default quota).
MANAGED_POLICIES_PER_ROLE = 10
MAX_SESSION_SECONDS = 43_200

_TRUSTED_PRINCIPAL = r"^arn:aws[a-z-]*:iam::\d{12}:(root|role/.+|user/.+)$"


def lock_table(config: Config) -> str:
    """The lock table of the fleet: bake.toml's `[aws] lock_table`, or the default name."""
    return config.aws.lock_table or DEFAULT_LOCK_TABLE


def with_lock_table(config: Config) -> Config:
    """`config` with its lock table named, so that its policy allows the table the template
    makes."""
    if config.aws.lock_table:
        return config
    aws = config.aws.model_copy(update={"lock_table": DEFAULT_LOCK_TABLE})
    return config.model_copy(update={"aws": aws})


def fleet_template(config: Config) -> dict[str, Any]:
    """The template of the lock table and the pipeline's role, for the images and services of
    `config`, to be deployed in the config's region."""
    region = config.aws.region
    table = lock_table(config)
    policies = split_policy(iam.policy(with_lock_table(config)))
    role: dict[str, Any] = {
        "Description": f"Runs goldenbake's pipeline for {config.path.name}",
        "MaxSessionDuration": {"Ref": "MaxSessionDuration"},
        "AssumeRolePolicyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": {"Ref": "TrustedPrincipalArn"}},
                    "Action": "sts:AssumeRole",
                }
            ],
        },
    }
    resources: dict[str, Any] = {"LockTable": _lock_table_resource(table)}
    if len(policies) == 1:
        role["Policies"] = [{"PolicyName": "goldenbake", "PolicyDocument": policies[0]}]
    else:
        role["ManagedPolicyArns"] = []
        for number, document in enumerate(policies, start=1):
            name = f"PipelinePolicy{number}"
            role["ManagedPolicyArns"].append({"Ref": name})
            resources[name] = {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {
                    "Description": f"goldenbake's pipeline for {config.path.name}, part {number}",
                    "PolicyDocument": document,
                },
            }
    resources["PipelineRole"] = {"Type": "AWS::IAM::Role", "Properties": role}
    resources.update(_build_profile(config))
    outputs = {
        "LockTable": {"Description": "[aws] lock_table", "Value": {"Ref": "LockTable"}},
        "RoleArn": {
            "Description": "The role bake runs as (a profile's role_arn, or CI's role)",
            "Value": {"Fn::GetAtt": ["PipelineRole", "Arn"]},
        },
    }
    if "BuildInstanceProfile" in resources:
        outputs["BuildInstanceProfile"] = {
            "Description": "[aws] build_instance_profile",
            "Value": {"Ref": "BuildInstanceProfile"},
        }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": (
            f"goldenbake fleet: the lock table and the role bake runs as, for {config.path.name}"
        ),
        "Parameters": _parameters(),
        "Rules": {
            "InTheConfigRegion": {
                "Assertions": [
                    {
                        "Assert": {"Fn::Equals": [{"Ref": "AWS::Region"}, region]},
                        "AssertDescription": (
                            f"bake.toml's region is {region}: deploy the stack there (the lock "
                            "table is regional, and the policy allows that region only)"
                        ),
                    }
                ]
            }
        },
        "Resources": resources,
        "Outputs": outputs,
    }


def _build_profile(config: Config) -> dict[str, Any]:
    """The instance profile [aws] build_instance_profile names, and its role (named as the policy
    passes it), whose only permissions are what the SSM agent needs to register for Session
    Manager. Build and verification instances hold it; no other permission is given to them."""
    name, role = config.aws.build_instance_profile, config.aws.build_role
    if not name or not role:
        return {}
    return {
        "BuildInstanceRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "RoleName": role,
                "Description": "goldenbake's build and verification instances: the SSM agent",
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
                "Policies": [
                    {
                        "PolicyName": "ssm-agent",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Action": managed_instances.SSM_AGENT_ACTIONS,
                                    "Resource": "*",
                                }
                            ],
                        },
                    }
                ],
            },
        },
        "BuildInstanceProfile": {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"InstanceProfileName": name, "Roles": [{"Ref": "BuildInstanceRole"}]},
        },
    }


def _parameters() -> dict[str, Any]:
    return {
        "TrustedPrincipalArn": {
            "Type": "String",
            "Description": (
                "Who may assume the pipeline's role: the ARN of a role (a CI runner's, an SSO "
                "permission set's), a user, or an account (arn:aws:iam::ACCOUNT:root)"
            ),
            "AllowedPattern": _TRUSTED_PRINCIPAL,
        },
        "MaxSessionDuration": {
            "Type": "Number",
            "Description": (
                "How long one assumed session lasts, in seconds: a bake-and-swap with its soak "
                "can outlast AWS's default hour"
            ),
            "Default": 14_400,
            "MinValue": 3_600,
            "MaxValue": MAX_SESSION_SECONDS,
        },
    }


def _lock_table_resource(table: str) -> dict[str, Any]:
    """The lease table of bake.leases: partition key LockID (a string); lapsed leases (their
    Expires in the past, which a run may take over anyway) are swept by DynamoDB's TTL."""
    return {
        "Type": "AWS::DynamoDB::Table",
        # Said outright (the default): a lock table holds leases only, nothing to keep.
        "DeletionPolicy": "Delete",
        "UpdateReplacePolicy": "Delete",
        "Properties": {
            "TableName": table,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "LockID", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "LockID", "KeyType": "HASH"}],
            "TimeToLiveSpecification": {"AttributeName": LEASE_EXPIRES, "Enabled": True},
        },
    }


def policy_size(document: dict[str, Any]) -> int:
    """A policy's size as IAM counts it: its JSON without whitespace."""
    return len(json.dumps(document, separators=(",", ":")))


def split_policy(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The policy as one document when it fits a role's inline policies; otherwise its
    statements in order, packed into as few managed policies as fit."""
    if policy_size(document) <= INLINE_POLICY_LIMIT:
        return [document]
    parts: list[dict[str, Any]] = []
    for statement in document["Statement"]:
        single = {"Version": document["Version"], "Statement": [statement]}
        if policy_size(single) > MANAGED_POLICY_LIMIT:
            raise InputError(
                f"the IAM statement {statement['Sid']} is {policy_size(single)} characters, more "
                f"than a managed policy's {MANAGED_POLICY_LIMIT}",
                hint="give the config fewer images or services per fleet",
            )
        grown = parts and {**parts[-1], "Statement": [*parts[-1]["Statement"], statement]}
        if grown and policy_size(grown) <= MANAGED_POLICY_LIMIT:
            parts[-1] = grown
        else:
            parts.append(single)
    if len(parts) > MANAGED_POLICIES_PER_ROLE:
        raise InputError(
            f"the IAM policy needs {len(parts)} managed policies, more than the "
            f"{MANAGED_POLICIES_PER_ROLE} a role holds",
            hint="give the config fewer images or services per fleet",
        )
    return parts


def fleet_yaml(config: Config) -> str:
    """The fleet template as `bake iam-policy --format cloudformation` prints it."""
    named = bool(_build_profile(config))
    capability = "CAPABILITY_NAMED_IAM" if named else "CAPABILITY_IAM"
    header = [
        f"# goldenbake fleet for {config.path.name}: the lock table, and the role bake runs as.",
        "# Printed by `bake iam-policy --format cloudformation`: the role's policy is computed",
        "# from bake.toml, so print this again when bake.toml changes. Deploy it with",
        f"# --capabilities {capability} in the config's region; see examples/cloudformation.",
    ]
    if named:
        header.append(
            f"# It also makes {config.aws.build_instance_profile}, the instance profile of "
            "build and verification instances."
        )
    if not config.aws.lock_table:
        header.append(
            f'# bake.toml sets no [aws] lock_table: add lock_table = "{DEFAULT_LOCK_TABLE}" '
            "(this stack's table)."
        )
    return "\n".join(header) + "\n" + to_yaml(fleet_template(config))


# A string YAML reads back as the same string when written plainly: it starts with a letter, has
# no ": " or " #", does not end in a colon or a space, and is not a word YAML 1.1 reads as a
# boolean or null. Any other string is written as a JSON string, which YAML reads the same way.
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9 _./*()',;=+@:-]*")
_NOT_PLAIN = re.compile(r": | #|[: ]$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        text = value
        plain = _PLAIN.fullmatch(text) and not _NOT_PLAIN.search(text)
        return text if plain and text.lower() not in _YAML_WORDS else json.dumps(text)
    raise TypeError(f"no YAML scalar for {type(value).__name__}")


def _lines(value: Any, indent: int) -> list[str]:
    """The block-style lines of a mapping or a sequence, indented by `indent` spaces."""
    pad = " " * indent
    lines: list[str] = []
    items = value.items() if isinstance(value, dict) else ((None, item) for item in value)
    for key, item in items:
        lead = f"{pad}{_scalar(key)}:" if isinstance(value, dict) else f"{pad}-"
        if isinstance(item, dict | list) and item:
            # A mapping's entries go under its key; a list item's first entry shares the dash.
            nested = _lines(item, indent + 2)
            if isinstance(value, dict):
                lines += [lead, *nested]
            else:
                lines += [lead + nested[0][indent + 1 :], *nested[1:]]
        else:
            empty = "{}" if isinstance(item, dict) else "[]"
            text = empty if isinstance(item, dict | list) else _scalar(item)
            lines.append(f"{lead} {text}")
    return lines


def to_yaml(document: dict[str, Any]) -> str:
    """`document` as block-style YAML, with a blank line between its top-level sections."""
    sections = ["\n".join(_lines({key: value}, 0)) for key, value in document.items()]
    return "\n\n".join(sections) + "\n"
