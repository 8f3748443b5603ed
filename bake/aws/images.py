"""AMIs: resolving bases, tagging lineage and verification, publishing the latest good image."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from bake.aws.errors import error_code
from bake.aws.tags import tags_of as tags_of  # images.tags_of, for the callers
from bake.config import BaseSpec
from bake.errors import BakeError, InputError
from bake.records import Built

TAG_PREFIX = "bake:"
# Where the SSM parameters that name each image's latest verified AMI live.
PARAMETER_PREFIX = "/bake/images/"
# The user an AMI of this toolkit is logged into as (its source's), for the images built on it.
SSH_USER_TAG = "bake:ssh-user"
# The login user of the distributions' own AMIs, by the account that publishes them. An owner not
# listed here (or one publishing several distributions, as CentOS and Fedora share one) says
# nothing, and aws.ssh_username is asked for.
DISTRIBUTION_USERS = {
    "136693071363": "admin",  # Debian
    "099720109477": "ubuntu",  # Canonical (Ubuntu)
    "137112412989": "ec2-user",  # Amazon (Amazon Linux)
    "309956199498": "ec2-user",  # Red Hat (RHEL)
}


def parameter_name(image: str) -> str:
    """The SSM parameter that names an image's latest verified AMI."""
    return f"{PARAMETER_PREFIX}{image}/latest"


def describe(cloud: Any, ami: str) -> dict[str, Any] | None:
    try:
        images = cloud.client("ec2").describe_images(ImageIds=[ami])["Images"]
    except ClientError as exc:
        if error_code(exc) in ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed"):
            return None
        raise
    return images[0] if images else None


def lineage_tags(
    *,
    image: str,
    digest: str,
    source_ami: str,
    verified: bool,
    kernel: str,
    run_id: str,
    inputs: str = "",
) -> dict[str, str]:
    tags = {
        "bake:image": image,
        "bake:verified": "true" if verified else "false",
        "bake:digest": digest,
        "bake:source-ami": source_ami,
        "bake:kernel": kernel or "unknown",
        "bake:run-id": run_id,
    }
    if inputs:
        tags["bake:inputs"] = inputs
    return tags


def tag_lineage(
    cloud: Any,
    ami: str,
    built: Built,
    *,
    verified: bool,
    kernel: str,
    run_id: str,
    extra: dict[str, str] | None = None,
) -> None:
    """Tag an AMI (and its snapshots) with the lineage of the build it came from."""
    tag(
        cloud,
        ami,
        lineage_tags(
            image=built.image,
            digest=built.digest,
            source_ami=built.source_ami,
            verified=verified,
            kernel=kernel,
            run_id=run_id,
            inputs=built.inputs_digest,
        )
        | (extra or {}),
    )


def tag(cloud: Any, ami: str, tags: dict[str, str]) -> None:
    """Tag an AMI and the snapshots behind it."""
    image = describe(cloud, ami)
    if image is None:
        raise BakeError(f"AMI {ami} does not exist in {cloud.region}")
    snapshots = [
        mapping["Ebs"]["SnapshotId"]
        for mapping in image.get("BlockDeviceMappings", [])
        if mapping.get("Ebs", {}).get("SnapshotId")
    ]
    cloud.client("ec2").create_tags(
        Resources=[ami, *snapshots], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
    )


def login_user(cloud: Any, ami: str, where: str, described: dict[str, Any] | None = None) -> str:
    """The user an AMI is logged into as over SSH: its `bake:ssh-user` tag (an AMI of this
    toolkit, written when it was built), or its owner's distribution; InputError otherwise.
    `described` is the AMI as describe_images gave it, when the caller has it already."""
    described = described or describe(cloud, ami)
    if described is None:
        raise InputError(f"{where}: AMI {ami} does not exist in {cloud.region}")
    tags = tags_of(described)
    if tags.get(SSH_USER_TAG):
        return tags[SSH_USER_TAG]
    owner = str(described.get("OwnerId", ""))
    if owner in DISTRIBUTION_USERS:
        return DISTRIBUTION_USERS[owner]
    source = tags.get("bake:source-ami")
    if source and source != ami and describe(cloud, source) is not None:
        return login_user(cloud, source, where)  # built before the tag was written
    name = described.get("Name") or ami
    raise InputError(
        f"{where}: cannot tell which user logs into {name} ({ami}, owner {owner or 'unknown'})",
        hint='set aws.ssh_username in bake.toml (for example "admin" for Debian)',
    )


def copies(cloud: Any, ami: str, regions: list[str]) -> dict[str, str]:
    """The copies of `ami` in `regions` (Packer's `ami_regions`), by region: the AMI of this
    account there with the same name (a build's AMI names are unique: `goldenbake-IMAGE-RUNID`).
    A region without one is left out."""
    if not set(regions) - {cloud.region}:
        return {}
    home = describe(cloud, ami)
    if home is None:
        return {}
    found = {}
    for region in regions:
        if region == cloud.region:
            continue
        there = (
            cloud.in_region(region)
            .client("ec2")
            .describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [home["Name"]]}])[
                "Images"
            ]
        )
        if there:
            found[region] = there[0]["ImageId"]
    return found


def publish(cloud: Any, image: str, ami: str, *, advanced: bool = False) -> int:
    """Point the image's parameter at `ami`; returns the parameter's new version. An `advanced`
    parameter (the tier AWS RAM can share) stays advanced: AWS has no way back."""
    request: dict[str, Any] = {
        "Name": parameter_name(image),
        "Value": ami,
        "Type": "String",
        "DataType": "aws:ec2:image",
        "Overwrite": True,
        "Description": f"goldenbake: latest verified AMI of image {image}",
    }
    if advanced:
        request["Tier"] = "Advanced"
    return int(cloud.client("ssm").put_parameter(**request)["Version"])


def parameter_arn(cloud: Any, image: str) -> str:
    """The ARN of the image's parameter in the cloud's account and region (what it is shared by,
    and what another account reads it by)."""
    return str(cloud.client("ssm").get_parameter(Name=parameter_name(image))["Parameter"]["ARN"])


def published(cloud: Any, image: str) -> str | None:
    try:
        response = cloud.client("ssm").get_parameter(Name=parameter_name(image))
    except ClientError as exc:
        if error_code(exc) == "ParameterNotFound":
            return None
        raise
    return response["Parameter"]["Value"]


def resolve(cloud: Any, spec: BaseSpec, where: str) -> str:
    """The AMI id a base names; InputError when it names nothing."""
    if spec.kind == "ami":
        if describe(cloud, spec.value) is None:
            raise InputError(f"{where}: AMI {spec.value} does not exist in {cloud.region}")
        return spec.value
    if spec.kind == "ssm":
        try:
            value = cloud.client("ssm").get_parameter(Name=spec.value)["Parameter"]["Value"]
        except ClientError as exc:
            if error_code(exc) == "ParameterNotFound":
                raise InputError(
                    f"{where}: SSM parameter {spec.value} does not exist in {cloud.region}"
                ) from None
            raise
        return value
    if spec.kind == "image":
        ami = published(cloud, spec.value)
        if ami is None:
            raise InputError(
                f"{where}: image '{spec.value}' has no verified AMI yet",
                hint=f"bake and verify it first: bake build {spec.value}, then verify and register",
            )
        return ami
    if spec.kind == "filter":
        return _newest_matching(cloud, spec.filter or {}, where)
    raise InputError(f"{where}: a {spec.kind} base cannot be resolved in the cloud")


def _newest_matching(cloud: Any, spec: dict[str, Any], where: str) -> str:
    filters = [
        {"Name": "name", "Values": [spec["name"]]},
        {"Name": "state", "Values": ["available"]},
    ]
    if spec.get("architecture"):
        filters.append({"Name": "architecture", "Values": [spec["architecture"]]})
    request: dict[str, Any] = {"Filters": filters}
    if spec.get("owners"):
        request["Owners"] = list(spec["owners"])
    images = cloud.client("ec2").describe_images(**request)["Images"]
    if not images:
        raise InputError(f"{where}: no AMI matches the filter {spec} in {cloud.region}")
    return max(images, key=lambda image: image.get("CreationDate", ""))["ImageId"]
