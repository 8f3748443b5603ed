"""An image's installed packages, as dpkg lists them, and the updates the archive has for them.

A bake records the package list of what it built (`dpkg-query` on the build machine, before it is
turned into an image); the planner compares it with the archive's current indexes on the host.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

# One line per package: status, name, version, architecture, source package, source version.
DPKG_QUERY_FORMAT = (
    r"${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t"
    r"${source:Package}\t${source:Version}\n"
)
DPKG_QUERY = f"dpkg-query -W -f='{DPKG_QUERY_FORMAT}'"


@dataclass(frozen=True, order=True)
class Package:
    """One installed binary package."""

    name: str
    version: str
    architecture: str
    source: str
    source_version: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Package:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            architecture=str(data["architecture"]),
            source=str(data.get("source") or data["name"]),
            source_version=str(data.get("source_version") or data["version"]),
        )


@dataclass(frozen=True, order=True)
class Update:
    """A newer version of an installed package in one suite of the archive."""

    name: str
    architecture: str
    installed: str
    candidate: str
    suite: str
    source: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Update:
        return cls(**{key: str(data.get(key, "")) for key in cls.__dataclass_fields__})

    def describe(self) -> str:
        return f"{self.name} {self.installed} -> {self.candidate} ({self.suite})"


def parse_dpkg_query(text: str) -> list[Package]:
    """The installed packages in the output of `DPKG_QUERY`, sorted; other states are left out."""
    packages = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 6 or not fields[0].startswith("ii"):
            continue
        _, name, version, architecture, source, source_version = fields
        packages.append(
            Package(name, version, architecture, source or name, source_version or version)
        )
    return sorted(packages)


def format_dpkg_query(packages: Iterable[Package]) -> str:
    """`packages` as `DPKG_QUERY` prints them (for tests and stored lists)."""
    return "".join(
        f"ii \t{p.name}\t{p.version}\t{p.architecture}\t{p.source}\t{p.source_version}\n"
        for p in packages
    )


def describe_updates(updates: Iterable[Update], limit: int = 1) -> str:
    """`linux-image-cloud-amd64 6.1.176-1 -> 6.1.192-1 (bookworm-security), 15 more`: the
    kernel first, then security updates, then the rest by name."""
    ordered = sorted(updates, key=_interest)
    if not ordered:
        return "no updates pending"
    shown = ", ".join(update.describe() for update in ordered[:limit])
    rest = len(ordered) - limit
    return f"{shown}, {rest} more" if rest > 0 else shown


def _interest(update: Update) -> tuple[int, int, str]:
    kernel = 0 if update.name.startswith("linux-image-") else 1
    security = 0 if update.suite.endswith("-security") else 1
    return (kernel, security, update.name)
