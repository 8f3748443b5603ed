"""The aws target: Packer's amazon-ebs builds the AMI in the account, verification runs on a
throwaway EC2 instance, and everything else is the same boto3 code the local target runs."""

from __future__ import annotations

import ipaddress
import shutil
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bake import ssh
from bake.aws import images, managed_instances, ssm_proxy
from bake.aws.instances import Throwaway, throwaway, vpc_cidr
from bake.aws.session import Cloud
from bake.config import Config, ImageConfig
from bake.console import Console
from bake.errors import BakeError, InputError
from bake.history import History
from bake.packer import PackerVersion
from bake.records import Built, SourceImage
from bake.runner import Runner
from bake.settings import AwsSettings
from bake.ssh import SshHost
from bake.state import StateDir
from bake.targets.base import RecordResource, Target

CHECKIP = "https://checkip.amazonaws.com"
SUDO_EXECUTE = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh -eu '{{ .Path }}'"


class AwsTarget(Target):
    name = "aws"
    settings: AwsSettings

    def __init__(
        self, config: Config, state: StateDir, history: History, runner: Runner, console: Console
    ) -> None:
        super().__init__(config, state, history, runner, console)
        self.settings = config.aws

    @cached_property
    def cloud(self) -> Cloud:
        return Cloud(
            self.settings.region,
            self.settings.endpoint_url,
            self.settings.profile,
            self.settings.role_arn,
            self.settings.role_session_name,
        )

    # rendering and building

    def template(self) -> str:
        return "aws.pkr.hcl.j2"

    def template_context(self, image: ImageConfig, packer_version: PackerVersion) -> dict[str, Any]:
        image_aws = image.aws
        if image_aws.ami_org_arns and not packer_version.has_required_plugins:
            raise InputError(
                f"images.{image.name}.aws.ami_org_arns needs Packer 1.7 or newer "
                f"(found {packer_version})",
                hint="upgrade Packer, or share with ami_users",
            )
        if not packer_version.has_required_plugins:
            self.console.line(
                f"    packer {packer_version}: amazon-ebs cannot require IMDSv2 on the build "
                "instance; Packer 1.7+ does (verification and launch templates always do)"
            )
        settings = self.settings.model_dump()
        settings["instance_type"] = image_aws.instance_type or self.settings.instance_type
        context = {
            "builder": "amazon-ebs",
            "mirror": self.settings.mirror,
            "security_mirror": self.settings.security_mirror,
            "execute_command": SUDO_EXECUTE,
            "communicator": self.settings.communicator,
            "aws": settings,
            "image_aws": image_aws.model_dump(),
        }
        if self.settings.session_manager:
            from bake.provisioners import ssm_agent_user_data

            scripts = self.config.packer_path / "scripts"
            context["ssm_agent_user_data"] = ssm_agent_user_data(scripts, image)
            context["ssm_agent_actions"] = managed_instances.SSM_AGENT_ACTIONS
        return context

    def placeholder_variables(self) -> dict[str, str]:
        placeholders = {
            "source_ami": "ami-00000000000000000",
            "build_digest": "0" * 64,
            "run_id": "validate",
            "manifest_path": str(self.state.root / "work" / "validate" / "manifest.json"),
            "inventory_directory": str(self.state.root / "work" / "validate" / "inventory"),
            "root_device": "/dev/xvda",
            "ssh_username": "admin",
        }
        if not self.settings.session_manager:
            placeholders["ssh_cidr"] = "192.0.2.1/32"
        return placeholders

    def build_variables(self, work: Path) -> dict[str, str]:
        """Who may reach the build instance over SSH; nobody with session_manager."""
        return {} if self.settings.session_manager else {"ssh_cidr": self.ssh_cidr}

    def packer_environment(self) -> dict[str, str]:
        """Packer resolves credentials itself, from the sources boto3 uses, so that they refresh
        during a long build: a profile (SSO, credential_process, an assumed role), a web identity
        token (a CI job's OIDC), the instance's role; `role_arn` is assumed by Packer's own
        `assume_role`. Only an AWS-compatible endpoint (which AWS's STS cannot vouch for) gets
        the run's credentials as they are now."""
        environment = {
            "AWS_REGION": self.settings.region,
            "AWS_DEFAULT_REGION": self.settings.region,
        }
        if self.settings.profile:
            environment["AWS_PROFILE"] = self.settings.profile
            environment["AWS_SDK_LOAD_CONFIG"] = "1"  # Packer's SDK reads ~/.aws/config then
        if not self.settings.endpoint_url:
            return environment
        credentials = self.cloud.session.get_credentials()
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            environment["AWS_ACCESS_KEY_ID"] = frozen.access_key
            environment["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
            environment["AWS_SESSION_TOKEN"] = frozen.token or ""
        return environment

    def chef_package_url(self, url: str) -> str:
        """An HTTPS address a build machine can fetch an `s3://` package from, for an hour."""
        parsed = urlparse(url)
        return self.cloud.client("s3").generate_presigned_url(
            "get_object",
            Params={"Bucket": parsed.netloc, "Key": parsed.path.lstrip("/")},
            ExpiresIn=3600,
        )

    @cached_property
    def ssh_cidr(self) -> str:
        """Who may reach build and verification instances over SSH: this runner only; with
        `ssh_interface = "private_ip"` the runner is inside the network, so the VPC's range (its
        public address says nothing about where it connects from)."""
        if self.settings.ssh_cidr:
            return self.settings.ssh_cidr
        if self.settings.ssh_interface == "private_ip":
            return vpc_cidr(self.cloud, self.settings.subnet_id)
        if self.settings.endpoint_url:
            return "127.0.0.1/32"
        try:
            with urllib.request.urlopen(CHECKIP, timeout=10) as response:
                address = ipaddress.ip_address(response.read().decode().strip())
        except (OSError, ValueError) as exc:
            raise BakeError(
                f"cannot find this runner's public address at {CHECKIP}: {exc}",
                hint="set aws.ssh_cidr in bake.toml",
            ) from None
        return f"{address}/32"

    # the cloud

    def resolve_base(self, image: ImageConfig) -> SourceImage:
        spec = image.base_for(self.name)
        where = f"images.{image.name}.base"
        ami = images.resolve(self.cloud, spec, where)
        described = images.describe(self.cloud, ami) or {}
        return SourceImage(
            ami=ami,
            description=f"{spec.describe()} ({ami})",
            variables={
                "root_device": described.get("RootDeviceName") or "/dev/xvda",
                "ssh_username": self.login_user(ami, where, described or None),
            },
        )

    def login_user(
        self, ami: str, where: str = "aws.ssh_username", described: dict[str, Any] | None = None
    ) -> str:
        """Who logs into instances of `ami` over SSH: [aws] ssh_username, or the AMI's own user
        (its bake:ssh-user tag, or its distribution's)."""
        if self.settings.ssh_username:
            return self.settings.ssh_username
        return images.login_user(self.cloud, ami, where, described)

    def keep_artifact(
        self, build: dict[str, Any], image: ImageConfig, digest: str, source: SourceImage
    ) -> Built:
        """The AMI in this region, from the build's `region:ami,...` artifact id."""
        amis = dict(
            entry.split(":", 1)
            for entry in (build.get("artifact_id") or "").split(",")
            if ":" in entry
        )
        if self.settings.region not in amis:
            raise BakeError(f"packer's manifest names no AMI in {self.settings.region}: {amis}")
        return Built(image.name, digest, source.ami, ami=amis[self.settings.region])

    def ask_instances(self, instances: list[str], command: str) -> dict[str, tuple[str, str]]:
        """Over SSM Run Command: no inbound port, the instance's SSM agent runs it."""
        from bake.aws import run_command

        return run_command.run_shell(self.cloud, instances, command)

    def publish_sbom(self, image: str, ami: str, document: str) -> str:
        """Into [aws] sbom_store when set (where other runners find it); a copy stays in the
        state directory."""
        kept = super().publish_sbom(image, ami, document)
        if not self.settings.sbom_store:
            return kept
        bucket, key = _s3_key(self.settings.sbom_store, f"{image}/{ami}.cdx.json")
        self.cloud.client("s3").put_object(
            Bucket=bucket, Key=key, Body=document.encode(), ContentType="application/json"
        )
        return f"s3://{bucket}/{key}"

    def read_sbom(self, location: str) -> str | None:
        if not location.startswith("s3://"):
            return super().read_sbom(location)
        bucket, _, key = location.removeprefix("s3://").partition("/")
        s3 = self.cloud.client("s3")
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        return str(body.decode("utf-8"))

    def still_exists(self, built: Built) -> bool:
        return bool(built.ami) and images.describe(self.cloud, built.ami or "") is not None

    def ensure_ami(self, built: Built) -> str:
        if not built.ami:
            raise BakeError(f"build {built.digest[:12]} of {built.image} made no AMI")
        return built.ami

    @contextmanager
    def machine(
        self,
        built: Built,
        image: ImageConfig,
        *,
        run_id: str,
        record: RecordResource,
        instance_profile: str | None = None,
    ) -> Iterator[SshHost]:
        """A throwaway EC2 instance with its own key pair and security group, and the service's
        instance profile (or the build's). With session_manager nothing may reach it: SSH goes
        through Systems Manager once its agent has registered."""
        ami = self.ensure_ami(built)
        user = self.login_user(ami, f"images.{image.name}")
        profile = instance_profile or self.settings.build_instance_profile
        session_manager = self.settings.session_manager
        if session_manager:
            self._check_session_manager(image, profile)
        spec = Throwaway(
            ami=ami,
            instance_type=image.aws.instance_type or self.settings.instance_type,
            ssh_cidr=None if session_manager else self.ssh_cidr,
            run_id=run_id,
            image=image.name,
            subnet_id=self.settings.subnet_id,
            instance_profile=profile,
            use_private_ip=self.settings.ssh_interface == "private_ip",
            session_manager=session_manager,
        )
        with (
            self.state.scratch(f"verify-{image.name}-{run_id}") as work,
            throwaway(self.cloud, spec, work / "id_ed25519", record) as launched,
        ):
            proxy = ssm_proxy.proxy_command(self.cloud) if session_manager else None
            config = ssh.write_ssh_config(work if proxy else self.state.ssh, proxy)
            host = SshHost(launched.address, 22, user, launched.key_file, config, proxy)
            if session_manager:
                self.console.line(f"    {launched.instance_id}: waiting for its SSM agent")
                managed_instances.wait_registered(
                    self.cloud, launched.instance_id, profile or "", self.settings.boot_timeout
                )
            self.console.line(f"    {launched.instance_id} at {launched.address}: waiting for SSH")
            ssh.wait_for_ssh(self.runner, host, timeout=self.settings.boot_timeout)
            try:
                yield host
            finally:
                ssh.close_shared(self.runner, host)  # and its Session Manager session

    def _check_session_manager(self, image: ImageConfig, profile: str | None) -> None:
        """What SSH through Session Manager needs on both ends, before anything is launched."""
        if not profile:
            raise InputError(
                f"verifying {image.name} through Session Manager needs an instance profile that "
                "lets the SSM agent register",
                hint="set services.NAME.instance_profile, or aws.build_instance_profile",
            )
        if not shutil.which(ssm_proxy.PLUGIN):
            raise InputError(
                f"{ssm_proxy.PLUGIN} is not installed, and aws.ssh_interface is session_manager",
                hint=ssm_proxy.INSTALL_HINT,
            )


def _s3_key(store: str, name: str) -> tuple[str, str]:
    """The bucket and key of `name` under an s3://BUCKET/PREFIX store."""
    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    return bucket, f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name
