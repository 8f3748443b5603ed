"""Customer keys of encrypted AMIs: whether each key's policy lets those who use it do so.

An AMI encrypted with a customer key passes verification (the caller's IAM policy covers the key)
and then fails in the green Auto Scaling group: the group's instances are launched by the Auto
Scaling service-linked role, which holds no KMS permission of its own, so the key policy must name
it. The accounts an AMI is shared with need the key policy's permission too (their own IAM
policies come on top). `bake doctor` reads each key policy and says which statement to add.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from bake.aws.errors import error_code
from bake.aws.session import Cloud

AUTOSCALING_ROLE = "role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
# What launching from (and copying) an encrypted snapshot takes of its key, as AWS documents it.
USE_ACTIONS = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:DescribeKey",
    "kms:CreateGrant",
)


@dataclass(frozen=True)
class Principal:
    """Who must be able to use a key: `arn` for a statement to name, `why` for the reader."""

    arn: str
    why: str
    account_wide: bool = False  # the account's root: any principal of that account matches


@dataclass(frozen=True)
class KeyCheck:
    """One key as the config names it, and what its policy does not allow."""

    key: str
    region: str
    arn: str | None = None
    missing: dict[str, list[str]] = field(default_factory=dict)  # principal ARN -> actions
    error: str | None = None

    def statement(self) -> dict[str, Any]:
        """The key policy statement that would allow what is missing."""
        actions = sorted({action for missing in self.missing.values() for action in missing})
        return {
            "Sid": "AllowGoldenbakeImageUse",
            "Effect": "Allow",
            "Principal": {"AWS": sorted(self.missing)},
            "Action": actions,
            "Resource": "*",
        }


def autoscaling_role(partition: str, account: str) -> Principal:
    return Principal(
        f"arn:{partition}:iam::{account}:{AUTOSCALING_ROLE}",
        "the Auto Scaling service-linked role launches the services' instances",
    )


def sharing_account(partition: str, account: str) -> Principal:
    return Principal(
        f"arn:{partition}:iam::{account}:root",
        f"account {account} is given the AMI",
        account_wide=True,
    )


def check(cloud: Cloud, key: str, principals: list[Principal]) -> KeyCheck:
    """Read `key`'s policy (an id, alias, alias ARN or key ARN) and find, per principal, the
    actions in USE_ACTIONS that no Allow statement gives it."""
    kms = cloud.client("kms")
    try:
        metadata = kms.describe_key(KeyId=key)["KeyMetadata"]
        document = json.loads(
            kms.get_key_policy(KeyId=metadata["KeyId"], PolicyName="default")["Policy"]
        )
    except ClientError as exc:
        return KeyCheck(key, cloud.region, error=f"{error_code(exc)}: {exc}")
    if metadata.get("KeyManager") == "AWS":
        return KeyCheck(key, cloud.region, metadata["Arn"])  # AWS manages who may use it
    statements = document.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    missing = {}
    for principal in principals:
        lacking = [
            action
            for action in USE_ACTIONS
            if not any(_allows(statement, principal, action) for statement in statements)
        ]
        if lacking:
            missing[principal.arn] = lacking
    return KeyCheck(key, cloud.region, metadata["Arn"], missing)


def _allows(statement: dict[str, Any], principal: Principal, action: str) -> bool:
    """Whether an Allow statement names this principal (or everyone) and covers this action.
    Conditions are not evaluated: a statement with conditions counts as allowing."""
    if statement.get("Effect") != "Allow":
        return False
    named = statement.get("Principal", {})
    if named == "*":
        arns: list[str] = ["*"]
    else:
        given = named.get("AWS", []) if isinstance(named, dict) else []
        arns = [given] if isinstance(given, str) else list(given)
    if not any(_names(arn, principal) for arn in arns):
        return False
    actions = statement.get("Action", [])
    actions = [actions] if isinstance(actions, str) else actions
    # A wanted pattern (kms:ReEncrypt*) is covered by the same pattern or a wider one (kms:*).
    return any(fnmatch.fnmatchcase(action.lower(), given.lower()) for given in actions)


def _names(arn: str, principal: Principal) -> bool:
    if arn == "*" or arn == principal.arn:
        return True
    account = principal.arn.split(":")[4]
    if principal.account_wide:
        return arn == account or arn.split(":")[4:5] == [account]
    return False
