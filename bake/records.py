"""What the stages of a run hand each other: small frozen records, found by their type.

A stage returns the records it made; the pipeline keeps them in the run's `Records`, and a later
stage asks for the one it needs by its class (`ctx.records.need(Built)`). Each record also says how
it appears in history and in `--json` results (`outputs()`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bake.errors import BakeError
from bake.rollouts import Rollout

if TYPE_CHECKING:
    from bake.bluegreen import ServiceState
    from bake.releases import Release


@dataclass(frozen=True)
class Record:
    """A hand-off between stages. Subclasses are frozen dataclasses."""

    def outputs(self) -> dict[str, Any]:
        """The record as plain JSON values: its fields, paths as strings."""
        return {item.name: _plain(getattr(self, item.name)) for item in fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


R = TypeVar("R", bound=Record)


class Records:
    """The records a run's stages have handed on so far, one of each type."""

    def __init__(self, *records: Record) -> None:
        self._by_type: dict[type[Record], Record] = {}
        for record in records:
            self.add(record)

    def add(self, record: Record) -> None:
        self._by_type[type(record)] = record

    def get(self, kind: type[R]) -> R | None:
        found = self._by_type.get(kind)
        return found if isinstance(found, kind) else None

    def need(self, kind: type[R], stage: str) -> R:
        """The record of type `kind`; an error naming the stage when no earlier stage made one."""
        found = self.get(kind)
        if found is None:
            raise BakeError(f"stage {stage} needs a {kind.__name__} that no earlier stage made")
        return found

    def outputs(self) -> dict[str, Any]:
        """Every record's outputs, merged in the order they were made."""
        merged: dict[str, Any] = {}
        for record in self._by_type.values():
            merged.update(record.outputs())
        return merged


@dataclass(frozen=True)
class RunOptions:
    """What the command line asked of a run beyond its subject."""

    rebuild: bool = False
    reverify: bool = False
    ami: str | None = None
    keep: int = 3
    dry_run: bool = False
    # `bake release`: the application (a directory or a .tar.gz) and the version it is stored as
    release_path: Path | None = None
    release_version: str | None = None


@dataclass(frozen=True)
class Rendered(Record):
    """A rendered, parsed and validated Packer template, and every file its steps upload or run."""

    path: Path
    text: str
    files: tuple[Path, ...]
    packer_version: str

    def outputs(self) -> dict[str, Any]:
        return {"template": str(self.path), "packer_version": self.packer_version}


@dataclass(frozen=True)
class SourceImage:
    """The resolved base of a build (the target's answer to build): an AMI id, and on the local
    target the disk behind it."""

    ami: str
    description: str
    variables: dict[str, str] = field(default_factory=dict)
    artifact: str | None = None


@dataclass(frozen=True)
class Built(Record):
    """What a build produced: an AMI on AWS, a disk in the image store on the local target."""

    image: str
    digest: str
    source_ami: str
    artifact: str | None = None
    ami: str | None = None
    # The digest of the template and its files alone (without the source and the archive's
    # updates): what tells that an image's scripts, cookbooks or template changed.
    inputs_digest: str = ""

    @property
    def subject(self) -> str:
        """What verification results are recorded against: the disk's digest, or the AMI."""
        return self.artifact or self.ami or ""

    def outputs(self) -> dict[str, Any]:
        return {"built": asdict(self)}


@dataclass(frozen=True)
class Verification(Record):
    """A build that passed its image's suites on a fresh machine."""

    built: Built
    kernel: str
    junit: str

    def outputs(self) -> dict[str, Any]:
        return {
            **self.built.outputs(),
            "verified": True,
            "kernel": self.kernel,
            "junit": self.junit,
        }


@dataclass(frozen=True)
class Observed(Record):
    """The service as this run last read it (`bluegreen.describe`), with what the run's stages
    changed since laid over: the next stage starts from it instead of reading the whole service
    again. A stage that changes the service hands on a new one, or one with no state (the next
    stage then reads the service again). Not shown in history."""

    state: ServiceState | None = field(repr=False)

    def outputs(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class VerifiedAmi(Record):
    """The verified AMI a rollout takes: the one register published, or the one a swap names."""

    ami: str


@dataclass(frozen=True)
class Released(Record):
    """A release stored in the service's release store, which the rollout names in the new launch
    template version's user data."""

    release: Release

    def outputs(self) -> dict[str, Any]:
        return {"release": self.release.to_dict()}


@dataclass(frozen=True)
class Published(Record):
    """The image's parameter now names this AMI."""

    ami: str
    parameter: str
    parameter_version: int | None = None


@dataclass(frozen=True)
class RolloutPlan(Record):
    """The rollout this run carries out (decided now, or resumed), and the launch template
    version the rollback colour runs, which the new version copies."""

    rollout: Rollout
    load_balancer_arn: str
    launch_template_id: str
    source_version: int | str
    data: dict[str, Any] = field(repr=False)

    def outputs(self) -> dict[str, Any]:
        return {"rollout": self.rollout.to_dict()}


@dataclass(frozen=True)
class LaunchTemplateVersion(Record):
    """The launch template version that runs the new AMI."""

    launch_template_id: str
    launch_template_version: int


@dataclass(frozen=True)
class Standby(Record):
    """The colour that took the new version, healthy, and its group and target group."""

    color: str
    asg: str
    target_group_arn: str


@dataclass(frozen=True)
class Traffic(Record):
    """Where the service's traffic goes after a shift or a rollback."""

    live_color: str
    ami: str | None = None
    release: str | None = None

    def outputs(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"live_color": self.live_color}
        if self.ami is not None:
            shown["ami"] = self.ami
        if self.release is not None:
            shown["live_release"] = self.release
        return shown


@dataclass(frozen=True)
class AlreadyLive(Record):
    """The live colour already runs exactly what the rollout would roll out: the swap is a no-op
    that leaves the standby, the rollback target, untouched."""

    live_color: str
    ami: str

    def outputs(self) -> dict[str, Any]:
        return {"already_live": True, "live_color": self.live_color, "ami": self.ami}
