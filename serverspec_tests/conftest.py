"""Shared fixtures of the image suites. The verify stage runs these with pytest-testinfra's ssh
backend (`--hosts=ssh://...`) and passes what the image must prove in BAKE_EXPECT_* variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Expected:
    image: str
    digest: str
    source_ami: str


@pytest.fixture(scope="session")
def expected() -> Expected:
    """The lineage the verify stage expects this machine's image to carry."""
    missing = [
        name
        for name in ("BAKE_EXPECT_IMAGE", "BAKE_EXPECT_DIGEST", "BAKE_EXPECT_SOURCE_AMI")
        if not os.environ.get(name)
    ]
    if missing:
        pytest.fail(f"run these suites through `bake verify`: {', '.join(missing)} not set")
    return Expected(
        image=os.environ["BAKE_EXPECT_IMAGE"],
        digest=os.environ["BAKE_EXPECT_DIGEST"],
        source_ami=os.environ["BAKE_EXPECT_SOURCE_AMI"],
    )


@dataclass(frozen=True)
class ArchiveAccess:
    """Where the verify stage keeps the Debian archive's signed indexes on the host, and the
    keyring they must verify with: the suites read the machine's sources and compare its packages
    with them without an `apt-get update` on the machine."""

    state_dir: Path
    keyring: Path


@pytest.fixture(scope="session")
def archive_access() -> ArchiveAccess | None:
    """The host's archive cache, when the suites run through `bake verify` (None otherwise)."""
    state_dir, keyring = os.environ.get("BAKE_STATE_DIR"), os.environ.get("BAKE_ARCHIVE_KEYRING")
    if not state_dir or not keyring:
        return None
    return ArchiveAccess(Path(state_dir), Path(keyring))
