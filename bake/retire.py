"""Retiring old AMIs of an image: keep the newest verified ones, and never one that an Auto Scaling
group in use references through its launch template (or launch configuration)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bake.aws import images
from bake.aws.session import Cloud


@dataclass(frozen=True)
class Decision:
    ami: str
    name: str
    created: str
    verified: str
    keep: bool
    reason: str
    snapshots: list[str] = field(default_factory=list)

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


def amis_in_use(cloud: Cloud) -> dict[str, str]:
    """AMI id -> which Auto Scaling group uses it, for every group in the region."""
    used: dict[str, str] = {}
    autoscaling = cloud.client("autoscaling")
    for page in autoscaling.get_paginator("describe_auto_scaling_groups").paginate():
        for group in page["AutoScalingGroups"]:
            template = group.get("LaunchTemplate") or group.get("MixedInstancesPolicy", {}).get(
                "LaunchTemplate", {}
            ).get("LaunchTemplateSpecification")
            ami = None
            if template:
                ami = _template_image(cloud, template)
                version = template.get("Version")
                where = f"{group['AutoScalingGroupName']} (launch template version {version})"
            elif group.get("LaunchConfigurationName"):
                configs = autoscaling.describe_launch_configurations(
                    LaunchConfigurationNames=[group["LaunchConfigurationName"]]
                )["LaunchConfigurations"]
                ami = configs[0]["ImageId"] if configs else None
                where = f"{group['AutoScalingGroupName']} (launch configuration)"
            if ami:
                used.setdefault(ami, where)
    return used


def decide(cloud: Cloud, image: str, keep: int) -> list[Decision]:
    """What to do with each AMI of `image`, newest first."""
    found = cloud.client("ec2").describe_images(
        Owners=["self"], Filters=[{"Name": "tag:bake:image", "Values": [image]}]
    )["Images"]
    found.sort(key=lambda ami: ami.get("CreationDate", ""), reverse=True)
    used = amis_in_use(cloud)
    published = images.published(cloud, image)
    decisions, verified_seen = [], 0
    for ami in found:
        verified = images.tags_of(ami).get("bake:verified", "never")
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
            keep_it, reason = (
                False,
                "failed verification" if verified == "false" else "never verified",
            )
        snapshots = [
            m["Ebs"]["SnapshotId"]
            for m in ami.get("BlockDeviceMappings", [])
            if m.get("Ebs", {}).get("SnapshotId")
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
            )
        )
    return decisions


def retire(cloud: Cloud, decision: Decision) -> None:
    """Deregister the AMI, then delete the snapshots behind it."""
    ec2 = cloud.client("ec2")
    ec2.deregister_image(ImageId=decision.ami)
    for snapshot in decision.snapshots:
        ec2.delete_snapshot(SnapshotId=snapshot)
