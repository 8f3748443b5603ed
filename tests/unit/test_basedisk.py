from __future__ import annotations

import dataclasses
import json
import struct
import threading
from pathlib import Path

import pytest

from bake import locks
from bake.config import LocalSettings
from bake.errors import BakeError, CommandFailed
from bake.history import History
from bake.inventory import Inventory
from bake.local import basedisk
from bake.local.basedisk import Recipe
from bake.local.store import ImageStore
from bake.state import StateDir
from tests.unit.fakes import FakeRunner
from tests.unit.flock_waiters import until_waiting_for_flock

PUBLIC_KEY = "ssh-ed25519 AAAAC3Nza goldenbake"
# What dpkg-query lists in the tree: one installed package, one removed but configured.
TREE_PACKAGES = (
    "ii \tlinux-image-cloud-amd64\t6.1.158-1\tamd64\tlinux-signed-amd64\t6.1.158+1\n"
    "rc \tlibold1\t1.0-1\tamd64\tlibold\t1.0-1\n"
)
SETTINGS = LocalSettings(accelerator="tcg", disk_size_gb=2)


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state").ensure()


@pytest.fixture
def history(state: StateDir) -> History:
    return History(state.history_db)


@pytest.fixture
def public_key(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519.pub"
    path.write_text(PUBLIC_KEY + "\n")
    return path


def _recipe(**changes) -> Recipe:
    return dataclasses.replace(
        Recipe("bookworm", "http://deb.debian.org/debian", 4, PUBLIC_KEY), **changes
    )


def test_master_boot_record_has_one_bootable_linux_partition() -> None:
    mbr = basedisk.master_boot_record(4 * 1024**3)

    assert len(mbr) == 512
    assert mbr[510:] == b"\x55\xaa"
    assert mbr[446] == 0x80
    assert mbr[447:450] == b"\xfe\xff\xff"
    assert mbr[450] == 0x83
    start, sectors = struct.unpack("<II", mbr[454:462])
    assert (start, sectors) == (2048, 4 * 1024**3 // 512 - 2048)
    assert mbr[462:510] == bytes(48)
    assert mbr[:446] == bytes(446)


@pytest.mark.parametrize(
    "change",
    [
        {"suite": "trixie"},
        {"mirror": "http://mirror.example/debian"},
        {"disk_size_gb": 8},
        {"public_key": "ssh-ed25519 BBBB other"},
        {"packages": basedisk.PACKAGES + ("curl",)},
        {"variables": {"etc/initramfs-tools/initramfs.conf": {"MODULES": "most"}}},
    ],
)
def test_digest_changes_when_an_input_changes(change: dict) -> None:
    assert _recipe().digest() == _recipe().digest()
    assert _recipe(**change).digest() != _recipe().digest()


def test_set_variables_replaces_and_appends() -> None:
    text = "# comment\nMODULES=most\n#COMPRESS=zstd\nBUSYBOX=auto\n"

    result = basedisk.set_variables(text, {"MODULES": "dep", "COMPRESS": "gzip", "NEW": "1"})

    assert result == "# comment\nMODULES=dep\nCOMPRESS=gzip\nBUSYBOX=auto\nNEW=1\n"


def _fake_tree(rootfs: Path, kernels: tuple[str, ...] = ("6.1.0-50-cloud-amd64",)) -> None:
    (rootfs / "boot").mkdir(parents=True)
    for version in kernels:
        (rootfs / "boot" / f"vmlinuz-{version}").write_bytes(b"kernel")
        (rootfs / "boot" / f"initrd.img-{version}").write_bytes(b"initrd")
    (rootfs / "etc/default").mkdir(parents=True)
    (rootfs / "etc/default/grub").write_text('GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    (rootfs / "etc/initramfs-tools").mkdir(parents=True)
    (rootfs / "etc/initramfs-tools/initramfs.conf").write_text("MODULES=most\nCOMPRESS=zstd\n")


def test_customise_writes_keys_network_grub_and_the_first_boot_unit(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    _fake_tree(rootfs)

    basedisk.customise(rootfs, _recipe())

    keys = rootfs / "root/.ssh/authorized_keys"
    assert keys.read_text() == PUBLIC_KEY + "\n"
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    assert oct((rootfs / "root/.ssh").stat().st_mode & 0o777) == "0o700"
    assert (rootfs / "etc/fstab").read_text() == "/dev/vda1 / ext4 defaults 0 1\n"
    assert "iface eth0 inet dhcp" in (rootfs / "etc/network/interfaces").read_text()
    grub = (rootfs / "etc/default/grub").read_text()
    assert "GRUB_TIMEOUT=0\n" in grub
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="console=ttyS0 net.ifnames=0"' in grub
    initramfs = (rootfs / "etc/initramfs-tools/initramfs.conf").read_text()
    assert initramfs == "MODULES=dep\nCOMPRESS=gzip\n"
    link = rootfs / "etc/systemd/system/multi-user.target.wants/bake-firstboot.service"
    assert str(link.readlink()) == "/etc/systemd/system/bake-firstboot.service"
    unit = (rootfs / "etc/systemd/system/bake-firstboot.service").read_text()
    assert "grub-install /dev/vda; update-grub;" in unit
    assert "StandardOutput=journal+console" in unit


def test_newest_kernel_sorts_versions_numerically(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    _fake_tree(rootfs, ("6.1.0-9-cloud-amd64", "6.1.0-50-cloud-amd64", "6.1.0-10-cloud-amd64"))

    kernel, initrd = basedisk.newest_kernel(rootfs / "boot")

    assert kernel.name == "vmlinuz-6.1.0-50-cloud-amd64"
    assert initrd.name == "initrd.img-6.1.0-50-cloud-amd64"


def test_building_needs_root() -> None:
    with pytest.raises(BakeError, match="needs root"):
        basedisk.require_root(1000)
    basedisk.require_root(0)


def test_only_an_emulated_first_boot_turns_address_randomisation_off() -> None:
    assert basedisk.first_boot_append("tcg").split()[-1] == "norandmaps"
    assert "norandmaps" not in basedisk.first_boot_append("kvm")
    assert "norandmaps" not in basedisk.KERNEL_APPEND, "the disk's digest keeps its command line"


class FakeBuild:
    """Answers the build's commands as the real tools would, leaving the files they leave."""

    def __init__(self, console: str = "sh[222]: BAKE-FIRSTBOOT-OK\nreboot: Power down\n") -> None:
        self.console = console
        self.seen_in_tree: dict[str, str] = {}
        self.runner = FakeRunner()
        self.runner.on("mmdebstrap", effect=lambda argv: _fake_tree(Path(argv[-2])))
        self.runner.on("qemu-system-x86_64", effect=self._first_boot)
        self.runner.on("qemu-img", effect=lambda argv: Path(argv[-1]).write_bytes(b"qcow2 disk"))
        self.runner.on("dpkg-query", stdout=TREE_PACKAGES)

    def _first_boot(self, argv: list[str]) -> None:
        rootfs = Path(argv[argv.index("-kernel") + 1]).parent.parent
        self.seen_in_tree["keys"] = (rootfs / "root/.ssh/authorized_keys").read_text()
        self.seen_in_tree["append"] = argv[argv.index("-append") + 1]
        chardev = next(a for a in argv if a.startswith("file,id=console,path="))
        Path(chardev.split("path=", 1)[1]).write_text(self.console)


def _build(fake: FakeBuild, state: StateDir, history: History, public_key: Path, lines=None):
    return basedisk.build(
        fake.runner, state, history, SETTINGS, public_key,
        console_line=(lines.append if lines is not None else lambda _line: None),
    )  # fmt: skip


@pytest.mark.root
def test_build_runs_each_phase_and_stores_the_disk(
    state: StateDir, history: History, public_key: Path
) -> None:
    fake = FakeBuild()
    lines: list[str] = []

    disk = _build(fake, state, history, public_key, lines)

    assert [argv[0] for argv in fake.runner.calls] == [
        "mmdebstrap", "dpkg-query", "mke2fs", "qemu-system-x86_64", "qemu-img",
    ]  # fmt: skip
    mmdebstrap = fake.runner.calls[0]
    admindir = fake.runner.calls[1][1]
    assert admindir.startswith("--admindir=") and admindir.endswith("/rootfs/var/lib/dpkg")
    [kernel] = Inventory(history.path).packages(disk.sha256) or []
    assert (kernel.name, kernel.version, kernel.source) == (
        "linux-image-cloud-amd64", "6.1.158-1", "linux-signed-amd64",
    )  # fmt: skip
    assert mmdebstrap[-3:-2] == ["bookworm"] and mmdebstrap[-1] == SETTINGS.mirror
    mke2fs = fake.runner.calls[2]
    assert mke2fs[mke2fs.index("-E") + 1] == "offset=1048576"
    assert mke2fs[-1] == "2047M"
    assert fake.seen_in_tree["keys"] == PUBLIC_KEY + "\n"
    # under TCG the first boot goes without address space randomisation (the disk keeps its own)
    assert fake.seen_in_tree["append"] == "root=/dev/vda1 rw console=ttyS0 net.ifnames=0 norandmaps"
    assert disk.path.read_bytes() == b"qcow2 disk"
    assert ImageStore(state.store, history).path(disk.sha256) == disk.path
    assert history.artifact(disk.sha256).image == "base-disk:debian-bookworm"
    index = json.loads((state.store / "base-disks.json").read_text())
    assert index == {disk.digest: disk.sha256}
    assert list((state.root / "work").iterdir()) == []
    assert any("mmdebstrap bookworm" in line for line in lines)
    assert any("first boot under tcg" in line for line in lines)


@pytest.mark.root
def test_a_second_build_with_the_same_inputs_is_a_cache_hit(
    state: StateDir, history: History, public_key: Path
) -> None:
    first = _build(FakeBuild(), state, history, public_key)
    again = FakeBuild()

    second = _build(again, state, history, public_key)

    assert second == first
    assert again.runner.calls == []


@pytest.mark.root
def test_a_changed_key_builds_a_new_disk(
    tmp_path: Path, state: StateDir, history: History, public_key: Path
) -> None:
    first = _build(FakeBuild(), state, history, public_key)
    other_key = tmp_path / "other.pub"
    other_key.write_text("ssh-ed25519 CCCC someone-else\n")
    again = FakeBuild()

    second = _build(again, state, history, other_key)

    assert second.digest != first.digest
    assert again.runner.commands("mmdebstrap")


@pytest.mark.root
def test_first_boot_without_the_mark_fails_and_quotes_the_console(
    state: StateDir, history: History, public_key: Path
) -> None:
    fake = FakeBuild(console="grub-install: error: cannot find a device for /\n")

    with pytest.raises(BakeError, match="did not install grub") as failure:
        _build(fake, state, history, public_key)

    assert "cannot find a device" in failure.value.message
    assert list((state.root / "work").iterdir()) == []
    assert not (state.store / "base-disks.json").exists()


@pytest.mark.root
def test_the_traced_echo_alone_is_not_success(
    state: StateDir, history: History, public_key: Path
) -> None:
    fake = FakeBuild(console="+ echo BAKE-FIRSTBOOT-OK\n")

    with pytest.raises(BakeError, match="did not install grub"):
        _build(fake, state, history, public_key)


@pytest.mark.root
def test_a_failed_mmdebstrap_removes_the_work_dir(
    state: StateDir, history: History, public_key: Path
) -> None:
    fake = FakeBuild()
    fake.runner.on("mmdebstrap", returncode=1, stdout="E: cannot reach the mirror")

    with pytest.raises(CommandFailed, match="cannot reach the mirror"):
        _build(fake, state, history, public_key)

    assert list((state.root / "work").iterdir()) == []


@pytest.mark.root
def test_a_disk_built_while_waiting_for_the_lock_is_reused(
    state: StateDir, history: History, public_key: Path
) -> None:
    recipe = Recipe("bookworm", SETTINGS.mirror, SETTINGS.disk_size_gb, public_key.read_text())
    waiter, results = FakeBuild(), []
    thread = threading.Thread(
        target=lambda: results.append(_build(waiter, state, history, public_key))
    )
    with locks.waiting(state.locks, f"base-disk-{recipe.digest()[:16]}"):
        thread.start()
        until_waiting_for_flock()
        store = ImageStore(state.store, history)
        built = basedisk._build_and_store(
            FakeBuild().runner, state, history, SETTINGS, recipe, store, lambda _line: None
        )
    thread.join(10)

    assert results == [built]
    assert waiter.runner.calls == [], "the disk built meanwhile was built again"
