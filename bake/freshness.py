"""What the archive has for an image, by content: the updates its build's patch step would apply
to its source, and the updates pending for a published build's packages.

Both read the package lists that bakes record (bake.inventory) against the archive's current
indexes (bake.archive), on the host, without booting anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bake import archive, locks
from bake.config import ImageConfig
from bake.errors import BakeError
from bake.packages import Package, Update
from bake.state import StateDir
from bake.steps import PatchStep

# The build digest's archive part when the source's packages are not known yet (the first build
# from a new AMI on the aws target): that build lists them, later ones compare by content.
SOURCE_UNKNOWN = "source-packages=unknown"


@dataclass(frozen=True)
class Mirrors:
    """The target's mirrors, used by a patch step that names none of its own."""

    mirror: str
    security_mirror: str
    keyring: Path = archive.DEBIAN_KEYRING


def patch_suites(image: ImageConfig, mirrors: Mirrors) -> list[archive.Suite] | None:
    """The suites the image's patch step upgrades from, or None when it has no patch step."""
    step = next((step for step in image.steps if isinstance(step, PatchStep)), None)
    if step is None:
        return None
    return archive.suites_for(
        step.suite,
        step.mirror or mirrors.mirror,
        step.security_mirror or mirrors.security_mirror,
    )


def open_archive(
    state: StateDir, suites: list[archive.Suite], keyring: Path = archive.DEBIAN_KEYRING
) -> archive.Archive:
    """The archive's indexes for these suites, refreshed (within the cache's age) from the
    mirror, cached under the state directory; one refresh at a time."""
    indexes = archive.Archive(suites, state.root / "archive", keyring=keyring)
    with locks.waiting(state.locks, "archive"):
        indexes.refresh()
    return indexes


@dataclass(frozen=True)
class PatchPlan:
    """What the archive decides for a build: its part of the build digest, and, when they are
    known, the updates the patch step will apply and the indexes they were read from."""

    digest_input: str
    updates: list[Update] | None = None
    indexes: archive.Archive | None = None


def patch_plan(
    image: ImageConfig,
    mirrors: Mirrors,
    state: StateDir,
    source_packages: list[Package] | None,
    warn: Callable[[str], None],
) -> PatchPlan:
    """The updates the image's patch step would apply to its source, and the digest of them, so
    a build is redone when, and only when, they change. An image without a patch step takes
    nothing from the archive's updates."""
    suites = patch_suites(image, mirrors)
    if suites is None:
        return PatchPlan("")
    if source_packages is None:
        return PatchPlan(SOURCE_UNKNOWN)
    try:
        indexes = open_archive(state, suites, mirrors.keyring)
        updates = indexes.pending(source_packages)
    except BakeError as exc:
        # The build machine may reach a mirror the host cannot; the build itself still patches.
        warn(f"    the archive's indexes cannot be read ({exc.message}); the build is not reused")
        return PatchPlan(f"archive=unreadable:{exc.message}")
    return PatchPlan(f"updates={archive.updates_digest(updates)}", updates, indexes)


def pending_for_image(
    image: ImageConfig,
    packages: list[Package],
    source_packages: list[Package] | None,
    indexes: archive.Archive,
) -> list[Update]:
    """The updates a rebuild of the image would bring to a build with `packages`: all of them
    when it has a patch step; else only those of the packages its own steps installed (the rest
    come with its base's rebuild), none when its source's packages are not known."""
    if has_patch_step(image):
        return indexes.pending(packages)
    if source_packages is None:
        return []
    from_source = set(source_packages)
    return indexes.pending(package for package in packages if package not in from_source)


def has_patch_step(image: ImageConfig) -> bool:
    return any(isinstance(step, PatchStep) for step in image.steps)
