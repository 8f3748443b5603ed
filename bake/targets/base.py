"""What a target is: the few places where the physical world differs between real AWS and the
local target (emulated AWS: a moto server, QEMU machines, a local image store). Everything else in a
run is the same code for both, talking to the target's `cloud` through boto3."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

from bake.aws.session import Cloud
from bake.config import Config, ImageConfig, ServiceConfig
from bake.console import Console
from bake.errors import BakeError, InputError
from bake.freshness import Mirrors
from bake.history import History
from bake.packer import PackerVersion
from bake.records import Built, SourceImage
from bake.runner import Runner
from bake.settings import AwsSettings, LocalSettings
from bake.ssh import SshHost
from bake.state import StateDir

# Called with (kind, id) the moment a resource exists, so that history holds it before any wait.
RecordResource = Callable[[str, str], None]


class Target(ABC):
    """One place runs happen. Subclasses fill in how images are built, kept and booted there."""

    name: ClassVar[str]
    settings: LocalSettings | AwsSettings

    def __init__(
        self, config: Config, state: StateDir, history: History, runner: Runner, console: Console
    ) -> None:
        self.config = config
        self.state = state
        self.history = history
        self.runner = runner
        self.console = console

    @property
    @abstractmethod
    def cloud(self) -> Cloud:
        """boto3 clients for this target (starting the local cloud when needed)."""

    # rendering and building

    def mirrors(self) -> Mirrors:
        """The Debian mirrors this target's builds patch from (unless a patch step names one)."""
        settings = self.settings
        return Mirrors(settings.mirror, settings.security_mirror, Path(settings.archive_keyring))

    # instances of services, as the proof of a rollout asks them

    def in_service_instances(self, group: str) -> list[str]:
        """The InService instances of an Auto Scaling group."""
        from bake.aws import autoscaling

        found = autoscaling.find_group(self.cloud, group)
        return autoscaling.in_service(found) if found else []

    @abstractmethod
    def ask_instances(self, instances: list[str], command: str) -> dict[str, tuple[str, str]]:
        """Run a shell command on each instance: instance -> (its output, an error or "")."""

    # the package lists published beside images

    def publish_sbom(self, image: str, ami: str, document: str) -> str:
        """Keep an AMI's SBOM where this target publishes them; give its location (a URI)."""
        path = self.state.root / "sbom" / image / f"{ami}.cdx.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(document, encoding="utf-8")
        partial.replace(path)
        return path.as_uri()

    def artifact_of(self, ami: str) -> str | None:
        """What else the target knows an AMI's image by (the local target's disk sha256)."""
        return None

    def read_sbom(self, location: str) -> str | None:
        """The SBOM published at `location`, or None when it is not there (any more)."""
        if not location.startswith("file://"):
            return None
        path = Path(unquote(location.removeprefix("file://")))
        return path.read_text(encoding="utf-8") if path.is_file() else None

    @abstractmethod
    def template(self) -> str:
        """The Jinja2 template in packer/ that builds images on this target."""

    @abstractmethod
    def template_context(self, image: ImageConfig, packer_version: PackerVersion) -> dict[str, Any]:
        """Values for rendering the template; no cloud call and no VM here."""

    @abstractmethod
    def placeholder_variables(self) -> dict[str, str]:
        """Values for every template variable, good enough for `packer validate`."""

    @abstractmethod
    def build_variables(self, work: Path) -> dict[str, str]:
        """Target-specific `-var` values for a build working in `work`."""

    @abstractmethod
    def packer_environment(self) -> dict[str, str]:
        """Environment variables Packer needs on this target."""

    @abstractmethod
    def chef_package_url(self, url: str) -> str:
        """An address the build machine can download an `s3://` Chef package from."""

    # images

    def prepare(self, machines: bool = True) -> None:
        """Make the target ready for a run that needs the cloud (the local target starts and
        seeds its cloud, and with `machines` the data plane its services run on); nothing to do
        by default."""

    @abstractmethod
    def resolve_base(self, image: ImageConfig) -> SourceImage:
        """The AMI this image's build starts from, resolved once per run."""

    def collect(
        self, manifest: dict[str, Any], image: ImageConfig, digest: str, source: SourceImage
    ) -> Built:
        """Take the artifact of the newest build out of Packer's manifest and keep it."""
        return self.keep_artifact(last_build(manifest), image, digest, source)

    @abstractmethod
    def keep_artifact(
        self, build: dict[str, Any], image: ImageConfig, digest: str, source: SourceImage
    ) -> Built:
        """Keep what one build of Packer's manifest made (its `artifact_id` and `files`)."""

    @abstractmethod
    def still_exists(self, built: Built) -> bool:
        """Whether an earlier build's artifact is still there to reuse."""

    @abstractmethod
    def ensure_ami(self, built: Built) -> str:
        """The AMI id of a build, registering it on the local target when needed."""

    def release_store(self, service: ServiceConfig) -> str:
        """Where `service`'s releases are kept (s3://BUCKET[/PREFIX]): its `releases` setting."""
        if not service.releases:
            raise InputError(
                f"service {service.name} has no release store",
                hint=f'set [services.{service.name}] releases = "s3://BUCKET/PREFIX" in bake.toml',
            )
        return service.releases

    def release_endpoint(self) -> str | None:
        """The S3 endpoint a release names for its machines; None: the region's own."""
        return None

    def suite_environment(self) -> dict[str, str]:
        """What the image suites are told of this target's images (BAKE_EXPECT_* variables)."""
        return {}

    def login_user(self, ami: str, where: str) -> str | None:
        """The user SSH logs into instances of `ami` as, when the target reads it from the AMI
        (None: the target's machines have one user of their own)."""
        return None

    def discard(self, ami: str) -> None:
        """Forget what the target keeps for a retired AMI besides the AMI itself (nothing by
        default; the local target's disk)."""

    @abstractmethod
    def machine(
        self,
        built: Built,
        image: ImageConfig,
        *,
        run_id: str,
        record: RecordResource,
        instance_profile: str | None = None,
    ) -> AbstractContextManager[SshHost]:
        """A fresh machine booted from the build (never the build machine), gone on exit."""


def last_build(manifest: dict[str, Any]) -> dict[str, Any]:
    """The newest build in Packer's manifest: of the last run, the last one listed."""
    builds = manifest.get("builds") or []
    if not builds:
        raise BakeError("packer's manifest lists no builds")
    last = manifest.get("last_run_uuid")
    matching = [build for build in builds if build.get("packer_run_uuid") == last] or builds
    return matching[-1]
