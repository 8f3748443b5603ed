"""Packer: which version is installed, and how its machine-readable output is read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from bake.errors import BakeError
from bake.runner import Runner

# The prefix of the lines provisioning scripts print to say what they are doing.
PROGRESS_MARKER = "bake-progress: "
PACKER_ENV = {"CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1"}
_VERSION = re.compile(r"Packer v?(\d+)\.(\d+)\.(\d+)")


@total_ordering
@dataclass(frozen=True)
class PackerVersion:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> PackerVersion:
        match = _VERSION.search(text)
        if not match:
            raise BakeError(f"cannot read a Packer version from {text.strip()[:80]!r}")
        return cls(*(int(part) for part in match.groups()))

    def __lt__(self, other: PackerVersion) -> bool:
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def has_required_plugins(self) -> bool:
        """`packer { required_plugins }` exists from 1.7; builders are separate plugins there."""
        return self >= PackerVersion(1, 7, 0)


def detect_version(runner: Runner) -> PackerVersion:
    result = runner.run(["packer", "version"], env=PACKER_ENV, timeout=60)
    return PackerVersion.parse(result.stdout)


@dataclass(frozen=True)
class MachineLine:
    """One line of `packer -machine-readable` output: timestamp,target,type,data..."""

    timestamp: str
    target: str
    kind: str
    data: list[str]

    @classmethod
    def parse(cls, line: str) -> MachineLine | None:
        parts = line.split(",")
        if len(parts) < 3 or not parts[0].isdigit():
            return None
        data = [
            part.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "")
            for part in parts[3:]
        ]
        return cls(parts[0], parts[1], parts[2], data)

    @property
    def step(self) -> str | None:
        """The build step this line announces (`==> source: Waiting for SSH...`), if any."""
        if self.kind == "ui" and len(self.data) >= 2 and self.data[0] == "say":
            text = self.data[1].strip()
            if text.startswith("==>"):
                _, _, rest = text.partition(": ")
                return (rest or text).strip()
        return None

    @property
    def progress(self) -> str | None:
        """What a provisioning script says it is doing (`bake-progress: unpacking perl (2 of
        25)`), if this line says it."""
        if self.kind == "ui" and len(self.data) >= 2 and self.data[0] == "message":
            _, marker, rest = self.data[1].partition(PROGRESS_MARKER)
            if marker:
                return rest.strip()
        return None

    @property
    def error(self) -> str | None:
        if self.kind == "ui" and len(self.data) >= 2 and self.data[0] == "error":
            return self.data[1].strip()
        return None

    @property
    def text(self) -> str:
        """The human-readable text carried by a ui line."""
        if self.kind == "ui" and len(self.data) >= 2:
            return self.data[1]
        return ""
