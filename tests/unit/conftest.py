"""Fixtures of the unit tests: a signed Debian archive served on 127.0.0.1 (fake_archive.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.fake_archive import Mirror, Signer, make_signer, serving, stop_signer


@pytest.fixture(scope="session")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signer]:
    made = make_signer(tmp_path_factory.mktemp("gnupg"))
    yield made
    stop_signer(made)


@pytest.fixture
def mirror(tmp_path: Path, signer: Signer) -> Iterator[Mirror]:
    with serving(tmp_path / "mirror", signer) as served:
        yield served
