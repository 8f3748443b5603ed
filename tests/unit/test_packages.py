"""Package lists as dpkg-query gives them, and how pending updates are described."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bake.packages import (
    Package,
    Update,
    describe_updates,
    format_dpkg_query,
    parse_dpkg_query,
)

REPO = Path(__file__).resolve().parents[2]


def test_the_inventory_script_lists_this_hosts_packages_in_the_format_parsed(
    tmp_path: Path,
) -> None:
    listed = tmp_path / "packages.tsv"
    subprocess.run(
        ["sh", str(REPO / "packer/scripts/inventory.sh")],
        env={"BAKE_INVENTORY_FILE": str(listed), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )

    packages = {package.name: package for package in parse_dpkg_query(listed.read_text())}

    dpkg = packages["dpkg"]
    assert dpkg.architecture in {"amd64", "arm64"} and dpkg.source == "dpkg"
    assert dpkg.version == dpkg.source_version and dpkg.version[0].isdigit()
    libc = next(p for name, p in packages.items() if name.startswith("libc6"))
    assert libc.source == "glibc", "a binary package names its source package"


def test_only_installed_packages_are_listed_and_a_missing_source_is_the_package() -> None:
    text = (
        "ii \tlibssl3\t3.0.17-1~deb12u2\tamd64\topenssl\t3.0.17-1~deb12u2\n"
        "rc \tlibold1\t1.0-1\tamd64\tlibold\t1.0-1\n"
        "ii \ttzdata\t2025b-0+deb12u1\tall\t\t\n"
        "a line that is not a package\n"
    )

    assert parse_dpkg_query(text) == [
        Package("libssl3", "3.0.17-1~deb12u2", "amd64", "openssl", "3.0.17-1~deb12u2"),
        Package("tzdata", "2025b-0+deb12u1", "all", "tzdata", "2025b-0+deb12u1"),
    ]
    assert parse_dpkg_query(format_dpkg_query(parse_dpkg_query(text))) == parse_dpkg_query(text)


def test_the_kernel_and_security_updates_are_named_first() -> None:
    updates = [
        Update("base-files", "amd64", "12.4+deb12u5", "12.4+deb12u12", "bookworm"),
        Update("libssl3", "amd64", "3.0.15-1", "3.0.17-1", "bookworm-security", "openssl"),
        Update("linux-image-cloud-amd64", "amd64", "6.1.176-1", "6.1.192-1", "bookworm-security"),
    ]

    assert describe_updates(updates) == (
        "linux-image-cloud-amd64 6.1.176-1 -> 6.1.192-1 (bookworm-security), 2 more"
    )
    assert describe_updates(updates[:1]) == "base-files 12.4+deb12u5 -> 12.4+deb12u12 (bookworm)"
    assert describe_updates([]) == "no updates pending"
    assert describe_updates(updates, limit=2).startswith(
        "linux-image-cloud-amd64 6.1.176-1 -> 6.1.192-1 (bookworm-security), libssl3 "
    )
