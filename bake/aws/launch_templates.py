"""EC2 launch templates and their versions.

New versions are always created from complete launch template data: moto ignores `SourceVersion`,
and complete data makes a version readable on its own on AWS too. Data read from a version is made
fit to send back first (`sendable`): AWS describes members its requests reject.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from botocore.exceptions import ClientError

from bake.aws import shapes
from bake.aws.errors import error_code
from bake.aws.session import Cloud

_NOT_FOUND = ("InvalidLaunchTemplateName.NotFoundException", "InvalidLaunchTemplateId.NotFound")


def find(cloud: Cloud, name: str) -> dict[str, Any] | None:
    """The launch template called `name`, or None."""
    try:
        found = cloud.client("ec2").describe_launch_templates(LaunchTemplateNames=[name])
    except ClientError as exc:
        if error_code(exc) in _NOT_FOUND:
            return None
        raise
    templates = found["LaunchTemplates"]
    return templates[0] if templates else None


def create(cloud: Cloud, name: str, data: dict[str, Any], description: str = "") -> dict[str, Any]:
    """Create a launch template whose version 1 holds `data`."""
    return cloud.client("ec2").create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData=data, VersionDescription=description
    )["LaunchTemplate"]


def version(cloud: Cloud, launch_template_id: str, number: int | str) -> dict[str, Any]:
    """One version of a template (`number` may be 3, "3", "$Latest" or "$Default"). A numbered
    version never changes: it is asked for once."""
    key = ("launch-template-version", f"{launch_template_id}:{number}")
    if (known := cloud.known.get(key)) is not None:
        return known
    found = cloud.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=launch_template_id, Versions=[str(number)]
    )["LaunchTemplateVersions"][0]
    cloud.known["launch-template-version", f"{launch_template_id}:{found['VersionNumber']}"] = found
    return found


def versions(cloud: Cloud, launch_template_id: str) -> list[dict[str, Any]]:
    """Every version of a template, newest first."""
    paginator = cloud.client("ec2").get_paginator("describe_launch_template_versions")
    found = [
        entry
        for page in paginator.paginate(LaunchTemplateId=launch_template_id)
        for entry in page["LaunchTemplateVersions"]
    ]
    return sorted(found, key=lambda entry: entry["VersionNumber"], reverse=True)


def create_version(
    cloud: Cloud, launch_template_id: str, data: dict[str, Any], description: str
) -> int:
    """Add a version holding `data` (complete, not a delta) and give its number."""
    created = cloud.client("ec2").create_launch_template_version(
        LaunchTemplateId=launch_template_id,
        LaunchTemplateData=data,
        VersionDescription=description[:255],
    )
    return int(created["LaunchTemplateVersion"]["VersionNumber"])


def delete_version(cloud: Cloud, launch_template_id: str, number: int) -> None:
    """Delete one version of a template."""
    cloud.client("ec2").delete_launch_template_versions(
        LaunchTemplateId=launch_template_id, Versions=[str(number)]
    )


def request_shape(cloud: Cloud) -> Any:
    """The shape of the launch template data that CreateLaunchTemplateVersion takes."""
    return shapes.request_shape(
        cloud.client("ec2"), "CreateLaunchTemplateVersion", "LaunchTemplateData"
    )


def sendable(cloud: Cloud, described: dict[str, Any]) -> dict[str, Any]:
    """A version's data as describe gave it, less what a request may not hold
    (`MetadataOptions.State`, `Ipv6Addresses[].IsPrimaryIpv6`, `Operator.Managed`, ...)."""
    fitted: dict[str, Any] = shapes.fit(described, request_shape(cloud))
    return fitted


def _canonical(value: Any) -> Any:
    """A form of launch template data where list order and key order do not matter."""
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return sorted((_canonical(item) for item in value), key=lambda item: json.dumps(item))
    return value


def same_data(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether two launch template datas are the same, whatever the order of keys and lists."""
    return bool(_canonical(first) == _canonical(second))


def find_version_with(cloud: Cloud, launch_template_id: str, data: dict[str, Any]) -> int | None:
    """The newest version whose data, as a request would send it, is exactly `data`, or None."""
    for entry in versions(cloud, launch_template_id):
        if same_data(sendable(cloud, entry.get("LaunchTemplateData", {})), data):
            return int(entry["VersionNumber"])
    return None


def with_tag(data: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    """A copy of `data` whose instances (and every other tagged resource) carry this tag."""
    data = copy.deepcopy(data)
    specifications = data.setdefault("TagSpecifications", [])
    if not any(spec.get("ResourceType") == "instance" for spec in specifications):
        specifications.append({"ResourceType": "instance", "Tags": []})
    for spec in specifications:
        tags = [tag for tag in spec.get("Tags", []) if tag["Key"] != key]
        spec["Tags"] = [*tags, {"Key": key, "Value": value}]
    return data
