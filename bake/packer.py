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

    def _ui(self, what: str) -> str | None:
        """The text of a `ui` line of this kind (`say`, `message`, `error`), or None."""
        if self.kind == "ui" and len(self.data) >= 2 and self.data[0] == what:
            return self.data[1]
        return None

    @property
    def step(self) -> str | None:
        """The build step this line announces (`==> source: Waiting for SSH...`), if any."""
        said = self._ui("say")
        if said is not None:
            text = said.strip()
            if text.startswith("==>"):
                _, _, rest = text.partition(": ")
                return (rest or text).strip()
        return None

    @property
    def message(self) -> str | None:
        """What a provisioner printed, without Packer's `source: ` before it, if this is one."""
        printed = self._ui("message")
        return None if printed is None else printed.strip().partition(": ")[2]

    @property
    def progress(self) -> str | None:
        """What a provisioning script says it is doing (`bake-progress: unpacking perl (2 of
        25)`), if this line says it."""
        printed = self._ui("message")
        if printed is not None:
            _, marker, rest = printed.partition(PROGRESS_MARKER)
            if marker:
                return rest.strip()
        return None

    @property
    def error(self) -> str | None:
        printed = self._ui("error")
        return None if printed is None else printed.strip()

    @property
    def text(self) -> str:
        """The human-readable text carried by a ui line."""
        if self.kind == "ui" and len(self.data) >= 2:
            return self.data[1]
        return ""


_APT_TOTAL = re.compile(r"^(\d+) upgraded, (\d+) newly installed")
_DPKG_DOING = {
    "unpacking": re.compile(r"^Unpacking ([^\s:]+)(?::\S+)? \("),
    "configuring": re.compile(r"^Setting up ([^\s:]+)(?::\S+)? \("),
}
_DPKG_TRIGGER = re.compile(r"^Processing triggers for ([^\s:]+)(?::\S+)? \(")


class StepProgress:
    """What the current build step is doing, read from the lines it prints: its own
    `bake-progress:` lines where it writes them (patch.sh), otherwise the package apt and dpkg are
    unpacking or configuring, N of M as apt counted them, so that any script or recipe that installs
    packages shows which one it is at."""

    def __init__(self) -> None:
        self._new_step()

    def _new_step(self) -> None:
        self._own_words = False
        self._count(0)

    def _count(self, total: int) -> None:
        """Start counting the packages of one apt run, `total` of them (0: not said)."""
        self._total = total
        self._seen: dict[str, set[str]] = {doing: set() for doing in _DPKG_DOING}

    def read(self, line: MachineLine) -> tuple[str | None, str | None]:
        """The step this line starts and what the step is doing now, each None if unchanged."""
        step = line.step
        if step is not None:
            self._new_step()
            return step, None
        said = line.progress
        if said is not None:
            self._own_words = True
            return None, said
        message = line.message
        if self._own_words or message is None:
            return None, None
        return None, self._from_apt(message)

    def _from_apt(self, text: str) -> str | None:
        total = _APT_TOTAL.match(text)
        if total:
            self._count(int(total[1]) + int(total[2]))
            return None
        for doing, pattern in _DPKG_DOING.items():
            match = pattern.match(text)
            if match:
                seen = self._seen[doing]
                seen.add(match[1])
                of = f" ({len(seen)} of {self._total})" if self._total >= len(seen) else ""
                return f"{doing} {match[1]}{of}"
        trigger = _DPKG_TRIGGER.match(text)
        return f"trigger {trigger[1]}" if trigger else None
