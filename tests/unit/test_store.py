from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from bake.errors import BakeError
from bake.history import History
from bake.local.store import ImageStore, sha256_of


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images", History(tmp_path / "history.sqlite"))


def _disk(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_put_moves_the_file_under_its_digest_read_only(tmp_path: Path, store: ImageStore) -> None:
    content = b"qcow2" * 300_000
    source = _disk(tmp_path, "build.qcow2", content)

    sha = store.put(source, "web")

    assert sha == hashlib.sha256(content).hexdigest()
    stored = store.path(sha)
    assert stored == tmp_path / "images" / "sha256" / f"{sha}.qcow2"
    assert stored.read_bytes() == content
    assert not source.exists()
    assert not stat.S_IMODE(stored.stat().st_mode) & 0o222
    assert store.history.artifact(sha).image == "web"
    assert store.exists(sha)


def test_putting_identical_bytes_twice_keeps_one_copy(tmp_path: Path, store: ImageStore) -> None:
    first = store.put(_disk(tmp_path, "a.qcow2", b"same"), "web")
    second = store.put(_disk(tmp_path, "b.qcow2", b"same"), "web")

    assert first == second
    assert list((tmp_path / "images" / "sha256").iterdir()) == [store.path(first)]
    assert not (tmp_path / "b.qcow2").exists()


def test_path_of_a_missing_image_is_an_error(store: ImageStore) -> None:
    missing = "0" * 64

    assert not store.exists(missing)
    with pytest.raises(BakeError, match="not in the local image store"):
        store.path(missing)


def test_a_malformed_digest_is_refused(store: ImageStore) -> None:
    with pytest.raises(BakeError, match="not a sha256"):
        store.path("../../etc/passwd")


def test_ami_mapping_both_ways(tmp_path: Path, store: ImageStore) -> None:
    sha = store.put(_disk(tmp_path, "a.qcow2", b"disk"), "web")

    assert store.ami(sha) is None
    store.set_ami(sha, "ami-0123456789abcdef0")

    assert store.ami(sha) == "ami-0123456789abcdef0"
    assert store.sha_for_ami("ami-0123456789abcdef0") == sha
    assert store.sha_for_ami("ami-ffffffffffffffff0") is None


def test_set_ami_of_an_unknown_image_is_an_error(store: ImageStore) -> None:
    with pytest.raises(BakeError, match="never put"):
        store.set_ami("1" * 64, "ami-1")


def test_sha256_of_reads_large_files_in_chunks(tmp_path: Path) -> None:
    content = bytes(range(256)) * 10_000
    path = _disk(tmp_path, "big", content)

    assert sha256_of(path) == hashlib.sha256(content).hexdigest()
