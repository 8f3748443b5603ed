"""End-to-end tests share one state directory for the session, so the base disk is built once and
the tests that follow each other (bake, swap again, roll back) see each other's results."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def e2e_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e") / "state"
