"""What a target is: the few places where the physical world differs between real AWS and the
local target. Everything else in a run is the same code for both."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bake.aws.session import Cloud
from bake.config import Config, ImageConfig
from bake.console import Console
from bake.history import History
from bake.packer import PackerVersion
from bake.runner import Runner
from bake.state import StateDir

if TYPE_CHECKING:
    from bake.context import RunContext


@dataclass(frozen=True)
class SourceImage:
    """The resolved base of a build: an AMI id, and on the local target the disk behind it."""

    ami: str
    description: str
    variables: dict[str, str] = field(default_factory=dict)
    artifact: str | None = None


@dataclass(frozen=True)
class Built:
    """What a build produced: an AMI on AWS, a disk in the image store on the local target."""

    image: str
    digest: str
    source_ami: str
    artifact: str | None = None
    ami: str | None = None


@dataclass(frozen=True)
class SshHost:
    """A machine reachable over SSH, as testinfra and the runner's ssh calls see it."""

    host: str
    port: int
    user: str
    identity_file: Path
    config_file: Path

    def testinfra_url(self) -> str:
        return (
            f"ssh://{self.user}@{self.host}:{self.port}"
            f"?ssh_identity_file={self.identity_file}&ssh_config={self.config_file}"
        )


class TargetBase:
    """What every target holds: the config, the state directory, history, the runner, the
    console."""

    def __init__(
        self, config: Config, state: StateDir, history: History, runner: Runner, console: Console
    ) -> None:
        self.config = config
        self.state = state
        self.history = history
        self.runner = runner
        self.console = console


class Target(Protocol):
    name: str

    @property
    def cloud(self) -> Cloud:
        """boto3 clients for this target (starting the local cloud when needed)."""

    def template(self) -> str:
        """The Jinja2 template in packer/ that builds images on this target."""

    def template_context(self, image: ImageConfig, packer_version: PackerVersion) -> dict[str, Any]:
        """Values for rendering the template; no cloud call and no VM here."""

    def prepare(self) -> None:
        """Make the target ready for a run that needs the cloud (the local target starts and
        seeds its cloud)."""

    def resolve_base(self, image: ImageConfig) -> SourceImage:
        """The AMI this image's build starts from, resolved once per run."""

    def collect(
        self, manifest: dict[str, Any], image: ImageConfig, digest: str, source: SourceImage
    ) -> Built:
        """Take the artifact out of Packer's manifest and keep it."""

    def still_exists(self, built: Built) -> bool:
        """Whether an earlier build's artifact is still there to reuse."""

    def ensure_ami(self, built: Built) -> str:
        """The AMI id of a build, registering it on the local target when needed."""

    def placeholder_variables(self) -> dict[str, str]:
        """Values for every template variable, good enough for `packer validate`."""

    def build_variables(self, work: Path) -> dict[str, str]:
        """Target-specific `-var` values for a build working in `work`."""

    def packer_environment(self) -> dict[str, str]:
        """Environment variables Packer needs on this target."""

    def chef_package_url(self, url: str) -> str:
        """An address the build machine can download an `s3://` Chef package from."""

    def discard(self, ami: str) -> None:
        """Forget what the target keeps for a retired AMI (the local target's disk)."""

    def machine(self, ctx: RunContext, built: Built) -> AbstractContextManager[SshHost]:
        """A fresh machine booted from the build (never the build machine), shut down on exit."""
