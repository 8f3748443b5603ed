"""The shapes shared by bake.toml's tables, and the settings of where things run: the local
target, the aws target, and how an image's AMI is made on AWS."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

# ASCII digits only: \d would also take other scripts' digits, which int() reads as numbers.
_DURATION = re.compile(r"\s*([0-9]+)\s*([smh]?)\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "": 1}
_WRITE = 'write 90, "90s", "10m" or "1h"'

# The longest wait bake.toml may ask for. Real timeouts are minutes to a few hours (a build's
# default is 2 hours), so a week leaves ample room; anything longer is a slip such as hours written
# for seconds, and a billion hours would overflow sleep() and thread waits far from the config.
MAX_SECONDS = 7 * 24 * 3600


def _seconds(value: Any) -> Any:
    """Accept 90, "90s", "10m" or "1h" and give seconds; refuse a duration longer than a week."""
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is not a duration ({_WRITE})")
    if isinstance(value, str):
        shown = repr(value if len(value) <= 40 else value[:40] + "...")
        match = _DURATION.fullmatch(value)
        if not match:
            raise ValueError(f"{shown} is not a duration ({_WRITE})")
        number, unit = match.group(1).lstrip("0") or "0", match.group(2)
        # Count digits before int(): thousands of them would hit Python's int conversion limit.
        if len(number) > len(str(MAX_SECONDS)) or int(number) * _UNITS[unit] > MAX_SECONDS:
            raise ValueError(f"{shown} is too long (at most 7 days)")
        return int(number) * _UNITS[unit]
    if isinstance(value, int | float) and value > MAX_SECONDS:
        raise ValueError(f"{value} seconds is too long (at most 7 days)")
    return value


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"'{url}' is not an http:// or https:// URL")
    return url


def _mirror_url(url: str) -> str:
    """Package mirrors are fetched by apt on the build machine, over HTTP(S)."""
    address = urlsplit(url)
    if address.scheme not in ("http", "https") or not address.netloc:
        raise ValueError(
            f"'{url}' is not an http:// or https:// address "
            "(for example http://deb.debian.org/debian)"
        )
    return url


Seconds = Annotated[int, BeforeValidator(_seconds), Field(gt=0)]
SecondsOrZero = Annotated[int, BeforeValidator(_seconds), Field(ge=0)]
MirrorUrl = Annotated[str, AfterValidator(_mirror_url)]


class Model(BaseModel):
    """Every table of bake.toml: unknown keys are errors, and a loaded config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalSettings(Model):
    """The embedded local target: a moto server and QEMU machines on this host."""

    region: str = "us-east-1"
    accelerator: Literal["auto", "kvm", "tcg"] = "auto"
    memory: int = Field(default=1024, ge=512)
    cpus: int = Field(default=2, ge=1)
    mirror: MirrorUrl = "http://deb.debian.org/debian"
    security_mirror: MirrorUrl = "http://deb.debian.org/debian-security"
    # The OpenPGP keyring the archive's InRelease files must verify with (a private mirror
    # signed with its own key names its keyring here).
    archive_keyring: str = Field(
        default="/usr/share/keyrings/debian-archive-keyring.gpg", pattern=r"^/"
    )
    disk_size_gb: int = Field(default=4, ge=2)
    boot_timeout: Seconds = 300
    port: int = Field(default=0, ge=0, lt=65536)
    # The data plane: a QEMU machine for every instance of a service's Auto Scaling groups, behind
    # HAProxy. false keeps instances as moto records only (no machines, no load balancer).
    machines: bool = True
    # Service machines idle most of the time: one vCPU and a small memory (MiB) each.
    machine_memory: int = Field(default=384, ge=192)
    machine_cpus: int = Field(default=1, ge=1)


_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d+$")
_ACCOUNT = re.compile(r"^\d{12}$")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_KMS_KEY = re.compile(
    rf"^({_UUID}|mrk-[0-9a-f]{{32}}|alias/[A-Za-z0-9/_-]+|"
    rf"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{{12}}:(key/({_UUID}|mrk-[0-9a-f]{{32}})|alias/[A-Za-z0-9/_-]+))$"
)
_ORG_ARN = re.compile(r"^arn:aws[a-z-]*:organizations::\d{12}:organization/o-[a-z0-9]{10,32}$")
_CIDR = re.compile(r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$")
_IAM_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")


def _check_region(region: str) -> str:
    if not _REGION.match(region):
        raise ValueError(f"'{region}' is not an AWS region (for example eu-west-1)")
    return region


def _check_kms_key(key: str) -> str:
    if not _KMS_KEY.match(key):
        raise ValueError(
            f"'{key}' is not a KMS key (give a key id, alias/NAME, or a key or alias ARN)"
        )
    return key


Region = Annotated[str, AfterValidator(_check_region)]
KmsKey = Annotated[str, AfterValidator(_check_kms_key)]


def _role_arn(arn: str) -> str:
    if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}", arn):
        raise ValueError(
            f"'{arn}' is not an IAM role ARN "
            "(for example arn:aws:iam::123456789012:role/goldenbake)"
        )
    return arn


class AwsSettings(Model):
    """The production target: real AWS through boto3, and Packer's amazon-ebs builder."""

    region: Region = "us-east-1"
    profile: str | None = None
    # A role every call is made as (assumed from the runner's credentials, and renewed): one per
    # account, so a CI job's OIDC identity reaches each account through its role.
    role_arn: str | None = None
    role_session_name: str = Field(default="goldenbake", pattern=r"^[\w+=,.@-]{2,64}$")
    # Roles in the accounts AMIs are shared with (account id -> role ARN), assumed from the
    # pipeline's identity: the published parameter is written there too, and retire looks there
    # for groups that still launch an AMI.
    consumer_roles: dict[str, str] = Field(default_factory=dict)
    # How long retire leaves a shared AMI disabled before it deregisters it, when an account it
    # is shared with has no role in consumer_roles to look into.
    retire_grace: Seconds = 7 * 24 * 3600
    # "ram": each image's published parameter, in every region it is published in, is an advanced
    # parameter shared through AWS RAM with the accounts and organizations its AMIs are shared
    # with (ami_users, ami_org_arns), who read it by its ARN. None: not shared.
    share_parameter: str | None = None
    endpoint_url: str | None = None
    instance_type: str = "t3.small"
    subnet_id: str | None = None
    # The user build and verification log in as; None: read from the source AMI (its
    # bake:ssh-user tag, or its owner's distribution).
    ssh_username: str | None = None
    # How build and verification instances are reached: their public or private address over
    # SSH (a temporary security group open to ssh_cidr), or "session_manager": SSH through AWS
    # Systems Manager, with no inbound port at all.
    ssh_interface: Literal["public_ip", "private_ip", "session_manager"] = "public_ip"
    ssh_cidr: str | None = None
    # The instance profile of build instances (Packer's iam_instance_profile), and of
    # verification instances when the service gives none; with session_manager its role must
    # let the SSM agent register. None: Packer makes a temporary one when it needs one.
    build_instance_profile: str | None = None
    # The role that profile holds (for `bake iam-policy`'s iam:PassRole); the profile's name when
    # not given.
    build_instance_role: str | None = None
    communicator: Literal["ssh", "none"] = "ssh"
    # The amazon plugin that Packer 1.7+ installs (`packer init`): one exact version, so a build
    # is reproducible and the plugin is part of the build digest (it is in the rendered template).
    amazon_plugin: str = "1.8.0"
    volume_size_gb: int = Field(default=8, ge=1)
    mirror: MirrorUrl = "http://cdn-aws.deb.debian.org/debian"
    security_mirror: MirrorUrl = "http://cdn-aws.deb.debian.org/debian-security"
    # The OpenPGP keyring the archive's InRelease files must verify with (a private mirror
    # signed with its own key names its keyring here).
    archive_keyring: str = Field(
        default="/usr/share/keyrings/debian-archive-keyring.gpg", pattern=r"^/"
    )
    boot_timeout: Seconds = 600
    # A DynamoDB table (partition key LockID, a string) for locks that hold across runners.
    lock_table: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{3,255}$")
    # Where each AMI's SBOM is published (s3://BUCKET/PREFIX), besides the state directory.
    sbom_store: str | None = Field(
        default=None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?$"
    )

    @field_validator("role_arn")
    @classmethod
    def _role(cls, arn: str | None) -> str | None:
        return None if arn is None else _role_arn(arn)

    @field_validator("consumer_roles")
    @classmethod
    def _consumers(cls, roles: dict[str, str]) -> dict[str, str]:
        for account, arn in roles.items():
            if not _ACCOUNT.match(account):
                raise ValueError(f"'{account}' is not an AWS account id (12 digits)")
            if _role_arn(arn).split(":")[4] != account:
                raise ValueError(f"the role for account {account} is in another account: {arn}")
        return roles

    @field_validator("amazon_plugin")
    @classmethod
    def _plugin_version(cls, version: str) -> str:
        if not re.fullmatch(r"\d+\.\d+\.\d+", version):
            raise ValueError(f"'{version}' is not one exact version (for example 1.8.0)")
        return version

    @field_validator("ssh_username")
    @classmethod
    def _user_name(cls, user: str | None) -> str | None:
        if user is not None and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
            raise ValueError(
                f"'{user}' is not a login name (lowercase letters, digits, _ and -, for example "
                "admin); leave it out to use the source AMI's own user"
            )
        return user

    @field_validator("ssh_cidr")
    @classmethod
    def _cidr(cls, cidr: str | None) -> str | None:
        if cidr is not None and not _CIDR.match(cidr):
            raise ValueError(f"'{cidr}' is not an IPv4 CIDR (for example 203.0.113.7/32)")
        return cidr

    @field_validator("share_parameter")
    @classmethod
    def _sharing(cls, way: str | None) -> str | None:
        if way is not None and way != "ram":
            raise ValueError(
                f"'{way}' is not a way to share the published parameter: write \"ram\" (AWS "
                "RAM, with the accounts and organizations of ami_users and ami_org_arns), or "
                "leave it out"
            )
        return way

    @field_validator("build_instance_profile", "build_instance_role")
    @classmethod
    def _iam_name(cls, name: str | None) -> str | None:
        if name is not None and not _IAM_NAME.match(name):
            raise ValueError(
                f"'{name}' is not an IAM name (letters, digits and +=,.@_-, at most 64 "
                "characters; the name, not its ARN)"
            )
        return name

    @model_validator(mode="after")
    def _reach(self) -> AwsSettings:
        if self.ssh_interface == "session_manager" and self.ssh_cidr:
            raise ValueError(
                "ssh_cidr opens SSH to an address range, and ssh_interface session_manager opens "
                "no port: leave ssh_cidr out, or use public_ip or private_ip"
            )
        if self.build_instance_role and not self.build_instance_profile:
            raise ValueError(
                "build_instance_role is the role of build_instance_profile, which is not given"
            )
        return self

    @property
    def session_manager(self) -> bool:
        """Instances are reached through Systems Manager, with no inbound port."""
        return self.ssh_interface == "session_manager"

    @property
    def build_role(self) -> str | None:
        """The role of the build instance profile, or None without one."""
        return self.build_instance_role or self.build_instance_profile


class ImageAwsSettings(Model):
    """How an image's AMI is made on AWS: encryption, copies to other regions, sharing, tags."""

    encrypt_boot: bool = True
    kms_key_id: KmsKey | None = None
    ami_regions: list[Region] = Field(default_factory=list)
    region_kms_key_ids: dict[Region, KmsKey] = Field(default_factory=dict)
    ami_users: list[str] = Field(default_factory=list)
    ami_org_arns: list[str] = Field(default_factory=list)
    instance_type: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("tags")
    @classmethod
    def _own_tags(cls, tags: dict[str, str]) -> dict[str, str]:
        reserved = sorted(key for key in tags if key.startswith("bake:"))
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)}: tags starting with bake: are the toolkit's own (lineage "
                "and verification); name yours otherwise"
            )
        return tags

    @field_validator("ami_users")
    @classmethod
    def _accounts(cls, users: list[str]) -> list[str]:
        for user in users:
            if not _ACCOUNT.match(user):
                raise ValueError(f"'{user}' is not an AWS account id (12 digits)")
        return users

    @field_validator("ami_org_arns")
    @classmethod
    def _organizations(cls, arns: list[str]) -> list[str]:
        for arn in arns:
            if not _ORG_ARN.match(arn):
                raise ValueError(
                    f"'{arn}' is not an organization ARN "
                    "(arn:aws:organizations::ACCOUNT:organization/o-...)"
                )
        return arns

    @model_validator(mode="after")
    def _encryption(self) -> ImageAwsSettings:
        if (self.kms_key_id or self.region_kms_key_ids) and not self.encrypt_boot:
            raise ValueError("a KMS key is given but encrypt_boot is not true")
        if self.encrypt_boot and (self.ami_users or self.ami_org_arns) and not self.kms_key_id:
            raise ValueError(
                "sharing an encrypted AMI needs kms_key_id (AMIs encrypted with the default "
                "key cannot be shared)"
            )
        missing = sorted(set(self.region_kms_key_ids) - set(self.ami_regions))
        if missing:
            raise ValueError(
                f"region_kms_key_ids names {', '.join(missing)}, which is not in ami_regions"
            )
        return self


class NotifySettings(Model):
    """Where `bake rollout` tells how it went: a message per failure and per finished rollout."""

    # A Slack-compatible incoming webhook (a JSON body with "text").
    webhook: Annotated[str, AfterValidator(_http_url)] | None = None
    sns_topic: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$"
    )
