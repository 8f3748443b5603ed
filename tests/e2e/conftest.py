"""End-to-end tests share one state directory for the session, so the base disk is built once and
the tests that follow each other (bake, swap again, roll back, stop a run) see each other's
results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.project import REPO, Project


@pytest.fixture(scope="session")
def e2e_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e") / "state"


@pytest.fixture(scope="session")
def project(e2e_state_dir: Path) -> Iterator[Project]:
    project = Project(e2e_state_dir, REPO / "bake.toml")
    yield project
    project.bake("local", "down")
