"""Releases: packed to the same bytes from the same files, checked before they are stored, named in
user data beside what else it says, listed per service, and recorded with the rollout."""

from __future__ import annotations

import base64
import email
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bake import releases
from bake.errors import InputError
from bake.releases import Release, ReleaseBook, named_in, pack, user_data_for
from bake.rollouts import Rollout

RELEASE = Release("demo", "1.4.2", "a" * 64, 2048, "s3://goldenbake-releases/demo/1.4.2.tar.gz")


def app(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "index.html").write_text("<h1>hello</h1>\n")
    (root / "bin" / "start").write_text("#!/bin/sh\nexec sleep infinity\n")
    (root / "bin" / "start").chmod(0o755)
    (root / "static").mkdir()
    (root / "static" / "style.css").write_text("body {}\n")
    (root / "current-page").symlink_to("index.html")
    return root


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {member.name: member for member in archive.getmembers()}


def test_a_folder_packs_to_the_same_bytes_whatever_its_times_and_owners(tmp_path: Path) -> None:
    first = pack(app(tmp_path / "one"))
    second_root = app(tmp_path / "two")
    (second_root / "index.html").touch()  # another mtime
    second = pack(second_root)

    assert first.data == second.data and first.sha256 == second.sha256
    assert first.sha256 == hashlib.sha256(first.data).hexdigest()
    assert first.files == 3
    packed = members(first.data)
    assert set(packed) == {
        "bin",
        "bin/start",
        "current-page",
        "index.html",
        "static",
        "static/style.css",
    }
    assert packed["bin/start"].mode == 0o755 and packed["index.html"].mode == 0o644
    assert {member.uid for member in packed.values()} == {0}
    assert {member.mtime for member in packed.values()} == {0}
    assert packed["current-page"].issym() and packed["current-page"].linkname == "index.html"


def test_another_file_is_another_release(tmp_path: Path) -> None:
    root = app(tmp_path / "app")
    before = pack(root).sha256
    (root / "index.html").write_text("<h1>hello again</h1>\n")
    assert pack(root).sha256 != before


def tar_gz(path: Path, *entries: tuple[str, bytes | None, str | None]) -> Path:
    """A .tar.gz of (name, content, link target) entries, as another tool might make it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content, link in entries:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                archive.addfile(info)
            else:
                info.size = len(content or b"")
                archive.addfile(info, io.BytesIO(content or b""))
    path.write_bytes(buffer.getvalue())
    return path


def test_a_given_tar_gz_is_stored_as_it_is(tmp_path: Path) -> None:
    given_archive = tar_gz(tmp_path / "app.tar.gz", ("index.html", b"hi", None))

    packed = pack(given_archive)

    assert packed.data == given_archive.read_bytes()
    assert packed.files == 1


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ((("../escape", b"x", None),), "would land outside"),
        ((("/etc/passwd", b"x", None),), "would land outside"),
        ((("ok", b"x", None), ("link", None, "../../etc")), "would land outside"),
        ((("ok", b"x", None), ("link", None, "/etc/passwd")), "would land outside"),
        ((("dir/link", None, "../ok"),), "holds no file"),
    ],
)
def test_an_archive_that_would_write_outside_the_release_is_refused(
    tmp_path: Path, entries: tuple, problem: str
) -> None:
    with pytest.raises(InputError, match=problem):
        pack(tar_gz(tmp_path / "app.tar.gz", *entries))


def test_what_is_neither_a_folder_nor_a_tar_gz_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app.zip").write_bytes(b"PK")
    (tmp_path / "broken.tar.gz").write_bytes(gzip.compress(b"not a tar"))
    (tmp_path / "empty").mkdir()

    with pytest.raises(InputError, match="neither a directory nor a .tar.gz"):
        pack(tmp_path / "app.zip")
    with pytest.raises(InputError, match="not a readable tar.gz"):
        pack(tmp_path / "broken.tar.gz")
    with pytest.raises(InputError, match="holds no file"):
        pack(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        pack(tmp_path / "missing")


@pytest.mark.parametrize("version", ["1.4.2", "2026-12-07.1", "v2+build.7", "a" * 40])
def test_usable_versions(version: str) -> None:
    assert releases.check_version(version) == version


@pytest.mark.parametrize("version", ["", "-1", ".hidden", "1/2", "1 2", "a" * 41, "é"])
def test_unusable_versions_are_bad_input(version: str) -> None:
    with pytest.raises(InputError, match="is not usable"):
        releases.check_version(version)


def test_where_a_release_is_kept_in_its_store() -> None:
    assert releases.store_key("s3://bucket", "demo", "1.0") == ("bucket", "demo/1.0.tar.gz")
    assert releases.store_key("s3://bucket/apps/prod/", "demo", "1.0") == (
        "bucket",
        "apps/prod/demo/1.0.tar.gz",
    )


def decoded(user_data: str) -> bytes:
    return base64.b64decode(user_data)


def test_user_data_of_its_own_is_the_release_document() -> None:
    user_data = user_data_for(RELEASE, None)

    assert json.loads(decoded(user_data)) == {
        "goldenbake-release": RELEASE.document()["goldenbake-release"]
    }
    assert named_in(user_data) == {
        "service": "demo",
        "version": "1.4.2",
        "url": "s3://goldenbake-releases/demo/1.4.2.tar.gz",
        "sha256": "a" * 64,
        "size": 2048,
    }


def test_the_local_targets_release_names_where_its_machines_reach_the_store() -> None:
    local = Release("demo", "1", "b" * 64, 1, "s3://b/demo/1.tar.gz", "http://169.254.0.1:4566")
    assert named_in(user_data_for(local, None))["endpoint"] == "http://169.254.0.1:4566"


def test_a_new_release_replaces_the_one_the_user_data_named() -> None:
    newer = Release("demo", "1.4.3", "c" * 64, 1, "s3://goldenbake-releases/demo/1.4.3.tar.gz")

    user_data = user_data_for(newer, user_data_for(RELEASE, None))

    assert named_in(user_data)["version"] == "1.4.3"
    assert b"1.4.2" not in decoded(user_data)


def test_user_data_of_the_teams_own_is_kept_beside_the_release() -> None:
    script = "#!/bin/sh\necho configured by the team\n"
    theirs = base64.b64encode(script.encode()).decode()

    first = user_data_for(RELEASE, theirs)
    newer = Release("demo", "1.4.3", "c" * 64, 1, "s3://goldenbake-releases/demo/1.4.3.tar.gz")
    second = user_data_for(newer, first)

    for user_data, version in ((first, "1.4.2"), (second, "1.4.3")):
        message = email.message_from_bytes(decoded(user_data))
        assert message.is_multipart()
        parts = [(part.get_content_type(), part.get_payload()) for part in message.get_payload()]
        assert parts[0] == ("text/x-shellscript", script), "cloud-init runs it as it did"
        assert [kind for kind, _ in parts] == ["text/x-shellscript", releases.PART_TYPE]
        assert named_in(user_data)["version"] == version


def test_cloud_config_keeps_its_type() -> None:
    theirs = base64.b64encode(b"#cloud-config\npackages: [htop]\n").decode()
    message = email.message_from_bytes(decoded(user_data_for(RELEASE, theirs)))
    assert message.get_payload()[0].get_content_type() == "text/cloud-config"


def test_compressed_or_binary_user_data_is_refused() -> None:
    with pytest.raises(InputError, match="gzip-compressed"):
        user_data_for(RELEASE, base64.b64encode(gzip.compress(b"#!/bin/sh\n")).decode())
    with pytest.raises(InputError, match="not text"):
        user_data_for(RELEASE, base64.b64encode(b"\xff\xfe\x00binary").decode())


@pytest.mark.parametrize(
    "user_data",
    [
        None,
        "",
        "not base64!",
        base64.b64encode(b"#!/bin/sh\n").decode(),
        base64.b64encode(b"{}").decode(),
    ],
)
def test_user_data_that_names_no_release(user_data: str | None) -> None:
    assert named_in(user_data) is None


@given(st.text(max_size=300))
def test_no_user_data_text_makes_the_reader_fail(text: str) -> None:
    named_in(base64.b64encode(text.encode()).decode())


def test_the_book_lists_each_services_releases_newest_first(tmp_path: Path) -> None:
    book = ReleaseBook(tmp_path / "history.sqlite")
    book.record(RELEASE, "r1")
    book.record(Release("demo", "1.4.3", "c" * 64, 9, "s3://x/demo/1.4.3.tar.gz"), "r2")
    book.record(Release("api", "7", "d" * 64, 3, "s3://x/api/7.tar.gz"), "r3")
    book.record(RELEASE, "r4")  # the same release again: kept once, as first recorded

    demo = book.listed("demo")
    assert [(entry["version"], entry["run_id"]) for entry in demo] == [
        ("1.4.3", "r2"),
        ("1.4.2", "r1"),
    ]
    assert {entry["service"] for entry in book.listed()} == {"demo", "api"}
    assert book.listed("nothing") == []


def test_a_rollout_record_holds_both_releases_in_a_load_balancer_tag() -> None:
    longest = "v" + "1" * 39
    rollout = Rollout(
        "20261207T092310Z-e80f5f",
        "rolled-back",
        "green",
        "ami-0123456789abcdef0",
        "green",
        "ami-0123456789abcdef0",
        "2026-12-07T09:23:10.123456Z",
        release=longest,
        rollback_release=longest,
    )

    encoded = rollout.encode()

    assert len(encoded) <= 256, "a load balancer tag's value holds at most 256 characters"
    assert Rollout.decode(encoded) == rollout
    older = "run=r1 state=live to=green ami=ami-1 from=blue from_ami=ami-0 at=2026-12-01T00:00:00Z"
    assert Rollout.decode(older).release is None, "records written before releases still read"
