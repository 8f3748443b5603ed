"""The archive's indexes, read from a small Debian archive served over real HTTP on 127.0.0.1 and
signed by a throwaway OpenPGP key, with gpgv checking it as it checks the real one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bake.archive import Archive, Candidate, Refreshed, Suite, suites_for, updates_digest
from bake.errors import BakeError
from bake.packages import Package, Update
from tests.unit.fake_archive import Mirror

RELEASE = [
    "openssl 3.0.11-1~deb12u2 amd64",
    "libc6 2.36-9+deb12u4 amd64 glibc",
    "base-files 12.4+deb12u5 amd64",
    "tzdata 2024a-0+deb12u1 all",
    "curl 7.88.1-10+deb12u5 amd64",
    "fonts-dejavu-core 2.37-6 all",
    "linux-image-cloud-amd64 6.1.76-1 amd64 linux-signed-amd64",
    "libssl3 3.0.15-1~deb12u1 amd64 openssl",  # a security fix folded into the point release
]
UPDATES = [
    "tzdata 2025b-0+deb12u1 all",
    "openssl 3.0.13-1~deb12u1 amd64",
]
SECURITY = [
    "openssl 3.0.15-1~deb12u1 amd64",
    "libc6 2.36-9+deb12u7 amd64 glibc (2.36-9+deb12u7)",
    "curl 7.88.1-10+deb12u8 amd64",
    "linux-image-cloud-amd64 6.1.112-1 amd64 linux-signed-amd64 (6.1.112+1)",
    "libssl3 3.0.15-1~deb12u1 amd64 openssl",
]
INSTALLED = [
    Package("openssl", "3.0.11-1~deb12u2", "amd64", "openssl", "3.0.11-1~deb12u2"),
    Package("libc6", "2.36-9+deb12u4", "amd64", "glibc", "2.36-9+deb12u4"),
    Package("base-files", "12.4+deb12u5", "amd64", "base-files", "12.4+deb12u5"),
    Package("tzdata", "2024a-0+deb12u1", "all", "tzdata", "2024a-0+deb12u1"),
    Package("curl", "7.88.1-10+deb12u9", "amd64", "curl", "7.88.1-10+deb12u9"),
    # Installed when the package was built per architecture; the archive now has it as "all".
    Package("fonts-dejavu-core", "2.37-2", "amd64", "fonts-dejavu", "2.37-2"),
    Package("linux-image-cloud-amd64", "6.1.76-1", "amd64", "linux-signed-amd64", "6.1.76+1"),
    Package("site-agent", "1.0", "amd64", "site-agent", "1.0"),
]


@pytest.fixture
def published(mirror: Mirror) -> Mirror:
    mirror.publish("bookworm", RELEASE)
    mirror.publish("bookworm-updates", UPDATES)
    mirror.publish("bookworm-security", SECURITY, archive="debian-security", by_hash=True)
    return mirror


def test_the_suites_are_those_the_patch_step_configures() -> None:
    assert suites_for("bookworm", "http://m/debian", "http://s/debian-security") == [
        Suite("bookworm", "http://m/debian"),
        Suite("bookworm-updates", "http://m/debian"),
        Suite("bookworm-security", "http://s/debian-security"),
    ]


def test_pending_takes_the_highest_version_of_any_suite(published: Mirror, tmp_path: Path) -> None:
    archive = published.archive(tmp_path / "cache")
    archive.refresh()
    kernel = "linux-image-cloud-amd64"
    assert archive.pending(INSTALLED) == [
        Update("fonts-dejavu-core", "amd64", "2.37-2", "2.37-6", "bookworm", "fonts-dejavu-core"),
        Update("libc6", "amd64", "2.36-9+deb12u4", "2.36-9+deb12u7", "bookworm-security", "glibc"),
        Update(kernel, "amd64", "6.1.76-1", "6.1.112-1", "bookworm-security", "linux-signed-amd64"),
        Update(
            "openssl",
            "amd64",
            "3.0.11-1~deb12u2",
            "3.0.15-1~deb12u1",
            "bookworm-security",
            "openssl",
        ),
        Update("tzdata", "all", "2024a-0+deb12u1", "2025b-0+deb12u1", "bookworm-updates", "tzdata"),
    ]
    assert [(c.suite, c.version) for c in archive.offers("openssl", "amd64")] == [
        ("bookworm-security", "3.0.15-1~deb12u1"),
        ("bookworm-updates", "3.0.13-1~deb12u1"),
        ("bookworm", "3.0.11-1~deb12u2"),
    ]
    assert archive.offers("libssl3", "amd64")[0].suite == "bookworm-security"  # on a tie


def test_architecture_all_keeps_its_name(published: Mirror, tmp_path: Path) -> None:
    archive = published.archive(tmp_path / "cache")
    archive.refresh()
    newest = Candidate("tzdata", "all", "2025b-0+deb12u1", "bookworm-updates", "tzdata")
    assert archive.candidate("tzdata", "all") == newest
    assert archive.candidate("tzdata", "amd64") == newest  # "all" is one with the native arch
    assert archive.candidate("tzdata", "i386") is None  # an architecture not asked for
    assert archive.candidate("site-agent", "amd64") is None
    kernel = ("linux-image-cloud-amd64", "amd64")
    assert archive.candidates([kernel, ("site-agent", "amd64")]) == {
        kernel: Candidate(*kernel, "6.1.112-1", "bookworm-security", "linux-signed-amd64")
    }


def test_versions_compare_as_debian_orders_them(mirror: Mirror, tmp_path: Path) -> None:
    cases = {  # name: (installed, in the archive, an update?)
        "epoch": ("2.0-1", "1:1.0-1", True),
        "tilde-is-lower": ("1.0-1", "1.0~rc1-1", False),
        "release-after-rc": ("1.0~rc1-1", "1.0-1", True),
        "stable-update": ("1.0-1", "1.0-1+deb12u1", True),
        "backport-style": ("1.0-1", "1.0-1~deb12u1", False),
        "numbers-not-text": ("1.0-1+deb12u9", "1.0-1+deb12u10", True),
        "same": ("1.0-1", "1.0-1", False),
    }
    listed = [f"{name} {archived} amd64" for name, (_, archived, _) in cases.items()]
    # Listed twice in one index, in either order: the higher wins.
    listed += ["twice 1.0-2 amd64", "twice 1.0-1 amd64", "again 1.0-1 amd64", "again 1.0-2 amd64"]
    mirror.publish("bookworm", listed, compression=".gz")
    archive = Archive(
        [Suite("bookworm", f"{mirror.url}/debian")],
        tmp_path / "cache",
        keyring=mirror.signer.keyring,
    )
    archive.refresh()
    installed = [Package(name, old, "amd64", name, old) for name, (old, _, _) in cases.items()]
    installed += [Package(name, "1.0-1", "amd64", name, "1.0-1") for name in ("twice", "again")]
    updates = {update.name: update.candidate for update in archive.pending(installed)}
    expected = {name: new for name, (_, new, newer) in cases.items() if newer}
    assert updates == {**expected, "twice": "1.0-2", "again": "1.0-2"}


@pytest.mark.parametrize("compression", [".gz", ""])
def test_an_index_without_xz_is_read_in_the_form_listed(
    mirror: Mirror, tmp_path: Path, compression: str
) -> None:
    mirror.publish("bookworm", ["curl 7.88.1-10+deb12u8 amd64"], compression=compression)
    archive = Archive(
        [Suite("bookworm", f"{mirror.url}/debian")],
        tmp_path / "cache",
        keyring=mirror.signer.keyring,
    )
    assert archive.refresh().downloaded == (
        f"{mirror.url}/debian/dists/bookworm/main/binary-amd64/Packages{compression}",
    )
    assert archive.candidate("curl", "amd64") is not None


def test_a_refresh_within_max_age_asks_nothing(published: Mirror, tmp_path: Path) -> None:
    first = published.archive(tmp_path / "cache").refresh()
    assert first.checked == ("bookworm", "bookworm-updates", "bookworm-security")
    assert len(first.downloaded) == 3
    asked = len(published.server.requests)

    again = published.archive(tmp_path / "cache")  # another run, on the same cache
    assert again.refresh() == Refreshed(checked=(), downloaded=())
    assert len(published.server.requests) == asked
    assert len(again.pending(INSTALLED)) == 5


@pytest.mark.parametrize(("conditional", "status"), [(True, 304), (False, 200)])
def test_after_max_age_an_unchanged_index_is_not_downloaded_again(
    published: Mirror, tmp_path: Path, conditional: bool, status: int
) -> None:
    published.archive(tmp_path / "cache").refresh()
    published.server.requests.clear()
    published.server.conditional = conditional

    refreshed = published.archive(tmp_path / "cache", max_age=0).refresh()
    assert refreshed.downloaded == ()
    assert published.server.requests == [
        ("/debian/dists/bookworm/InRelease", status),
        ("/debian/dists/bookworm-updates/InRelease", status),
        ("/debian-security/dists/bookworm-security/InRelease", status),
    ]


def test_a_changed_index_alone_is_downloaded(published: Mirror, tmp_path: Path) -> None:
    archive = published.archive(tmp_path / "cache")
    archive.refresh()
    before = updates_digest(archive.pending(INSTALLED))
    index = published.publish(
        "bookworm-security",
        [*SECURITY, "openssl 3.0.16-1~deb12u1 amd64"],
        archive="debian-security",
        by_hash=True,
    )

    refreshed = archive.refresh(force=True)
    by_hash = f"{index.parent}/by-hash/SHA256/{hashlib.sha256(index.read_bytes()).hexdigest()}"
    assert refreshed.downloaded == (by_hash.replace(str(published.root), published.url),)
    assert archive.offers("openssl", "amd64")[0].version == "3.0.16-1~deb12u1"
    assert updates_digest(archive.pending(INSTALLED)) != before
    assert len(list((tmp_path / "cache" / "indexes").glob("*.json"))) == 3  # the old one dropped


def test_the_cache_holds_each_index_once_parsed(published: Mirror, tmp_path: Path) -> None:
    published.archive(tmp_path / "cache").refresh()
    served = published.root / "debian/dists/bookworm/main/binary-amd64/Packages.xz"
    parsed = (
        tmp_path / "cache" / "indexes" / f"{hashlib.sha256(served.read_bytes()).hexdigest()}.json"
    )
    rows = json.loads(parsed.read_text())
    assert ["tzdata", "all", "2024a-0+deb12u1", "tzdata"] in rows
    assert ["libc6", "amd64", "2.36-9+deb12u4", "glibc"] in rows
    state = json.loads((tmp_path / "cache" / "state.json").read_text())
    assert sorted(state["suites"]) == [
        f"{published.url}/debian-security/dists/bookworm-security",
        f"{published.url}/debian/dists/bookworm",
        f"{published.url}/debian/dists/bookworm-updates",
    ]

    parsed.unlink()  # a cache cleaned by hand is filled again, even within max_age
    again = published.archive(tmp_path / "cache").refresh()
    assert again.downloaded == (served.as_posix().replace(str(published.root), published.url),)
    assert json.loads(parsed.read_text()) == rows


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_tampered_index_is_refused(published: Mirror, tmp_path: Path, damage: str) -> None:
    served = published.root / "debian/dists/bookworm/main/binary-amd64/Packages.xz"
    body = bytearray(served.read_bytes())
    if damage == "flipped byte":
        body[len(body) // 2] ^= 0xFF
        expected = r"Packages.xz: sha256 [0-9a-f]{64} does not match the signed InRelease"
    else:
        del body[-10:]
        expected = r"Packages.xz: \d+ bytes, the signed InRelease says \d+"
    served.write_bytes(bytes(body))
    with pytest.raises(
        BakeError, match=f"^{published.url}/debian/dists/bookworm/main/.*{expected}"
    ):
        published.archive(tmp_path / "cache").refresh()


@pytest.mark.parametrize(
    ("trouble", "expected"),
    [
        ("altered after signing", "the OpenPGP signature does not verify .*BAD signature"),
        ("signed by an unknown key", "the OpenPGP signature does not verify .*No public key"),
        ("past its Valid-Until", "expired on Sat, 01 Jan 2022 00:00:00 UTC"),
        (
            "signed for another suite",
            "is signed for suite bullseye-security, not bookworm-security",
        ),
    ],
)
def test_an_inrelease_that_cannot_be_trusted_is_refused(
    published: Mirror, tmp_path: Path, trouble: str, expected: str
) -> None:
    keyring = None
    inrelease = published.root / "debian-security/dists/bookworm-security/InRelease"
    if trouble == "altered after signing":
        inrelease.write_text(inrelease.read_text().replace("Origin: Test", "Origin: Tset"))
    elif trouble == "signed by an unknown key":
        keyring = tmp_path / "empty-keyring.gpg"
        keyring.write_bytes(b"")
    else:
        published.publish(
            "bookworm-security",
            SECURITY,
            archive="debian-security",
            valid_until="Sat, 01 Jan 2022 00:00:00 UTC" if "Valid" in trouble else "",
            codename="bullseye-security" if "suite" in trouble else "",
        )
    url = f"{published.url}/debian-security/dists/bookworm-security/InRelease"
    if keyring:  # the first suite is refused already
        url = f"{published.url}/debian/dists/bookworm/InRelease"
    with pytest.raises(BakeError, match=f"^{url}.* {expected}"):
        published.archive(tmp_path / "cache", keyring=keyring).refresh()


def test_a_missing_suite_names_the_url(mirror: Mirror, tmp_path: Path) -> None:
    mirror.publish("bookworm", RELEASE)
    with pytest.raises(BakeError) as raised:
        mirror.archive(tmp_path / "cache").refresh()
    url = f"{mirror.url}/debian/dists/bookworm-updates/InRelease"
    assert str(raised.value) == f"cannot download {url}: HTTP 404 File not found"


def test_lookups_before_a_refresh_say_so(published: Mirror, tmp_path: Path) -> None:
    with pytest.raises(BakeError, match="dists/bookworm have not been fetched"):
        published.archive(tmp_path / "cache").pending(INSTALLED)


def test_updates_digest_is_the_set_of_updates() -> None:
    updates = [
        Update("openssl", "amd64", "3.0.11-1~deb12u2", "3.0.15-1~deb12u1", "bookworm-security"),
        Update("tzdata", "all", "2024a-0+deb12u1", "2025b-0+deb12u1", "bookworm-updates"),
    ]
    digest = updates_digest(updates)
    assert digest == updates_digest(reversed(updates))
    assert digest == "b63ec3c16dc9443919cb5ec947ffd5298c0a42389db318661f62284b20040208"
    newer = [updates[0], Update("tzdata", "all", "2024a-0+deb12u1", "2025c-0+deb12u1", "bookworm")]
    assert updates_digest(newer) != digest
    assert updates_digest([]) != digest
