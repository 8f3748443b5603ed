"""Retiring old AMIs of an image: keep the newest verified ones, the published one, and never one
that an Auto Scaling group references through a launch template (its own, or its mixed instances
policy's) or a launch configuration. The decision is a pure function of what was described."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bake.aws import images
from bake.aws.session import Cloud
from bake.aws.tags import tags_of

# The tag naming the run that built an AMI; run ids start with the run's UTC time.
RUN_ID_TAG = "bake:run-id"


@dataclass(frozen=True)
class Decision:
    ami: str
    name: str
    created: str
    verified: str
    keep: bool
    reason: str
    snapshots: list[str] = field(default_factory=list)
    region: str = ""
    # Kept for now but disabled (no new launches), to be deregistered after the grace period:
    # an account it is shared with cannot be looked into.
    disable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _template_image(cloud: Cloud, template: dict[str, Any]) -> str | None:
    ec2 = cloud.client("ec2")
    key = (
        {"LaunchTemplateId": template["LaunchTemplateId"]}
        if template.get("LaunchTemplateId")
        else {"LaunchTemplateName": template["LaunchTemplateName"]}
    )
    versions = ec2.describe_launch_template_versions(
        **key, Versions=[str(template.get("Version") or "$Default")]
    )["LaunchTemplateVersions"]
    return versions[0]["LaunchTemplateData"].get("ImageId") if versions else None


def _launch_templates(group: dict[str, Any]) -> list[dict[str, Any]]:
    """Every launch template a group launches from: its own, or its mixed instances policy's and
    any an override of that policy names for its instance types."""
    if group.get("LaunchTemplate"):
        return [group["LaunchTemplate"]]
    policy = group.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {})
    specs = [policy.get("LaunchTemplateSpecification")] + [
        override.get("LaunchTemplateSpecification") for override in policy.get("Overrides", [])
    ]
    return [spec for spec in specs if spec]


def amis_in_use(cloud: Cloud) -> dict[str, str]:
    """AMI id -> which Auto Scaling group uses it, for every group in the region."""
    used: dict[str, str] = {}
    autoscaling = cloud.client("autoscaling")
    for page in autoscaling.get_paginator("describe_auto_scaling_groups").paginate():
        for group in page["AutoScalingGroups"]:
            name = group["AutoScalingGroupName"]
            for template in _launch_templates(group):
                version = template.get("Version") or "$Default"
                if ami := _template_image(cloud, template):
                    used.setdefault(ami, f"{name} (launch template version {version})")
            if group.get("LaunchConfigurationName"):
                configs = autoscaling.describe_launch_configurations(
                    LaunchConfigurationNames=[group["LaunchConfigurationName"]]
                )["LaunchConfigurations"]
                if configs and configs[0].get("ImageId"):
                    used.setdefault(configs[0]["ImageId"], f"{name} (launch configuration)")
    return used


def newest_first(ami: dict[str, Any]) -> tuple[str, str, str, str]:
    """Sort key for newest first (with reverse=True). CreationDate has one-second resolution on
    moto, so AMIs registered in the same second are told apart by the run id of their build (which
    starts with the second the run started), then by name, then by id. The id is unique, so the
    order is total and the decisions are the same for any order describe_images gives."""
    return (
        ami.get("CreationDate", ""),
        tags_of(ami).get(RUN_ID_TAG, ""),
        ami.get("Name", ""),
        ami["ImageId"],
    )


def decide(
    cloud: Cloud,
    image: str,
    keep: int,
    consumers: Mapping[str, Cloud | None] | None = None,
    grace: timedelta = timedelta(days=7),
) -> list[Decision]:
    """What to do with each AMI of `image` in the cloud's region, newest first. The copies in
    another region are judged there by the same rules (they carry the same tags, that region's
    groups use them, and that region's parameter publishes one). `consumers` are the accounts the
    image is shared with: a Cloud in each (its role assumed), or None where there is no role."""
    found = cloud.client("ec2").describe_images(
        Owners=["self"],
        Filters=[{"Name": "tag:bake:image", "Values": [image]}],
        IncludeDisabled=True,
    )["Images"]
    elsewhere: dict[str, str] = {}
    for account, there in sorted((consumers or {}).items()):
        if there is not None:
            for ami, by in amis_in_use(there).items():
                elsewhere.setdefault(ami, f"account {account}: {by}")
    unseen = sorted(account for account, there in (consumers or {}).items() if there is None)
    decided = decide_images(
        found, amis_in_use(cloud), images.published(cloud, image), keep, image,
        elsewhere=elsewhere, unseen=unseen, now=datetime.now(UTC), grace=grace,
    )  # fmt: skip
    return [replace(decision, region=cloud.region) for decision in decided]


def decide_images(
    found: Iterable[dict[str, Any]],
    used: Mapping[str, str],
    published: str | None,
    keep: int,
    image: str,
    *,
    elsewhere: Mapping[str, str] | None = None,
    unseen: Sequence[str] = (),
    now: datetime | None = None,
    grace: timedelta = timedelta(days=7),
) -> list[Decision]:
    """What to do with each AMI (as describe_images gives them), newest first: keep the `keep`
    newest verified ones, every one in `used` (AMI id -> by what) and the `published` one.

    An AMI shared with other accounts is also kept while a group there launches it (`elsewhere`,
    AMI id -> by what). When an account it is shared with cannot be looked into (`unseen`), it is
    disabled first (no new launches anywhere, running instances untouched) and deregistered only
    `grace` after that, which its `bake:disabled-at` tag records."""
    elsewhere = elsewhere or {}
    now = now or datetime.now(UTC)
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    decisions, verified_seen = [], 0
    for ami in sorted(found, key=newest_first, reverse=True):
        verified = tags_of(ami).get("bake:verified", "never")
        newest = verified == "true" and verified_seen < keep
        verified_seen += verified == "true"
        if ami["ImageId"] in used:
            keep_it, reason = True, f"in use by {used[ami['ImageId']]}"
        elif ami["ImageId"] == published:
            keep_it, reason = True, f"published as {images.parameter_name(image)}"
        elif newest:
            keep_it, reason = True, f"one of the newest {keep} verified"
        elif verified == "true":
            keep_it, reason = False, f"older than the newest {keep} verified"
        else:
            keep_it = False
            reason = "failed verification" if verified == "false" else "never verified"
        disable = False
        if not keep_it and ami["ImageId"] in elsewhere:
            keep_it, reason = True, f"in use in {elsewhere[ami['ImageId']]}"
        elif not keep_it and unseen:
            keep_it, disable, reason = _staged(ami, reason, unseen, now, grace)
        snapshots = [
            mapping["Ebs"]["SnapshotId"]
            for mapping in ami.get("BlockDeviceMappings", [])
            if mapping.get("Ebs", {}).get("SnapshotId")
        ]
        decisions.append(
            Decision(
                ami["ImageId"],
                ami.get("Name", ""),
                ami.get("CreationDate", ""),
                verified,
                keep_it,
                reason,
                snapshots,
                disable=disable,
            )
        )
    return decisions


DISABLED_TAG = "bake:disabled-at"


def _staged(
    ami: dict[str, Any], reason: str, unseen: Sequence[str], now: datetime, grace: timedelta
) -> tuple[bool, bool, str]:
    """(keep, disable, reason) for an AMI to retire that accounts not looked into may launch."""
    accounts = ", ".join(unseen)
    since = tags_of(ami).get(DISABLED_TAG)
    if ami.get("State") != "disabled" or not since:
        return True, True, (
            f"{reason}; disabled first: shared with {accounts}, which no consumer_roles role "
            f"looks into; deregistered {grace.days} days after"
        )  # fmt: skip
    try:
        disabled = datetime.fromisoformat(since)
    except ValueError:
        disabled = now
    if now - disabled < grace:
        until = (disabled + grace).isoformat(timespec="seconds")
        return True, False, f"{reason}; disabled since {since}, deregistered from {until}"
    return False, False, f"{reason}; disabled since {since}, longer than {grace.days} days"


def disable(cloud: Cloud, decision: Decision) -> None:
    """Deprecate the AMI (the accounts it is shared with are told so, and their listings stop
    offering it), then disable it (no new launches), and record when, for the grace period."""
    ec2 = cloud.client("ec2")
    now = datetime.now(UTC)
    # AWS takes no time in the past, and rounds to the minute: the next one.
    ec2.enable_image_deprecation(ImageId=decision.ami, DeprecateAt=now + timedelta(minutes=1))
    ec2.disable_image(ImageId=decision.ami)
    stamp = now.isoformat(timespec="seconds")
    ec2.create_tags(Resources=[decision.ami], Tags=[{"Key": DISABLED_TAG, "Value": stamp}])


def retire(cloud: Cloud, decision: Decision) -> None:
    """Deregister the AMI, then delete the snapshots behind it."""
    ec2 = cloud.client("ec2")
    ec2.deregister_image(ImageId=decision.ami)
    for snapshot in decision.snapshots:
        ec2.delete_snapshot(SnapshotId=snapshot)
