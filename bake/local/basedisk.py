"""The local target's base image: a minimal Debian disk with its own boot loader, cached by content.

The disk boots through grub from its own /boot, so a kernel upgraded by a later bake is the kernel
that boots next time. It is built from the plain suite (no -updates, no -security) so that a bake's
patch step has real security updates to apply. No loop devices or mounts: mmdebstrap makes a tree,
mke2fs writes it into a partition of a raw file, and a first boot installs grub and powers off.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bake import locks
from bake.config import LocalSettings
from bake.errors import BakeError, InputError
from bake.history import History
from bake.inventory import Inventory
from bake.local import qemu
from bake.local.store import ImageStore
from bake.packages import DPKG_QUERY_FORMAT, Package, parse_dpkg_query
from bake.runner import Runner
from bake.state import StateDir

FORMAT_VERSION = 1
INDEX_NAME = "base-disks.json"
IMAGE_PREFIX = "base-disk:debian-"
FIRSTBOOT_MARK = "BAKE-FIRSTBOOT-OK"
KERNEL_APPEND = "root=/dev/vda1 rw console=ttyS0 net.ifnames=0"
SECTOR = 512
PARTITION_START = 2048
MMDEBSTRAP_TIMEOUT = 1800.0

PACKAGES = (
    "systemd-sysv", "openssh-server", "linux-image-cloud-amd64", "initramfs-tools", "udev",
    "iproute2", "ifupdown", "isc-dhcp-client", "sudo", "python3", "grub-pc",
)  # fmt: skip
DEBCONF_HOOK = (
    'echo "grub-pc grub-pc/install_devices multiselect /dev/vda"'
    ' | chroot "$1" debconf-set-selections'
)
FIRSTBOOT_COMMANDS = (
    "grub-install /dev/vda",
    "update-grub",
    "systemctl disable bake-firstboot.service",
    "rm -f /etc/systemd/system/bake-firstboot.service",
    f"echo {FIRSTBOOT_MARK}",
    "systemctl poweroff",
)
FIRSTBOOT_UNIT = f"""\
[Unit]
Description=goldenbake first boot: install the boot loader, then power off
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/bin/sh -exc '{"; ".join(FIRSTBOOT_COMMANDS)}'
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""
NETWORK_INTERFACES = """\
auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
"""
# Shell-style variables set in files the packages ship: file -> {name: value}.
FILE_VARIABLES = {
    "etc/default/grub": {
        "GRUB_TIMEOUT": "0",
        "GRUB_CMDLINE_LINUX_DEFAULT": '"console=ttyS0 net.ifnames=0"',
    },
    "etc/initramfs-tools/initramfs.conf": {"MODULES": "dep", "COMPRESS": "gzip"},
}
HOSTNAME = "goldenbake"


@dataclass(frozen=True)
class BaseDisk:
    """A base disk in the image store, and the digest of the recipe that made it."""

    path: Path
    sha256: str
    digest: str
    suite: str


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the bytes of a base disk; its digest is the cache key."""

    suite: str
    mirror: str
    disk_size_gb: int
    public_key: str
    packages: tuple[str, ...] = PACKAGES
    variables: dict[str, dict[str, str]] = field(default_factory=lambda: FILE_VARIABLES)

    def files(self) -> dict[str, tuple[str, int]]:
        """Files written into the tree: relative path -> (content, mode)."""
        return {
            "root/.ssh/authorized_keys": (self.public_key.strip() + "\n", 0o600),
            "etc/fstab": ("/dev/vda1 / ext4 defaults 0 1\n", 0o644),
            "etc/hostname": (f"{HOSTNAME}\n", 0o644),
            "etc/hosts": (f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n", 0o644),
            "etc/network/interfaces": (NETWORK_INTERFACES, 0o644),
            "etc/systemd/system/bake-firstboot.service": (FIRSTBOOT_UNIT, 0o644),
        }

    def digest(self) -> str:
        body = {
            "format": FORMAT_VERSION,
            "suite": self.suite,
            "mirror": self.mirror,
            "disk_size_gb": self.disk_size_gb,
            "packages": list(self.packages),
            "debconf": DEBCONF_HOOK,
            "files": self.files(),
            "variables": self.variables,
            "append": KERNEL_APPEND,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def mmdebstrap_argv(self, rootfs: Path) -> list[str]:
        return [
            "mmdebstrap", "--variant=minbase", f"--include={','.join(self.packages)}",
            f"--customize-hook={DEBCONF_HOOK}", self.suite, str(rootfs), self.mirror,
        ]  # fmt: skip


def master_boot_record(disk_bytes: int) -> bytes:
    """A 512-byte MBR with one bootable Linux partition from 1 MiB to the end of the disk."""
    sectors = disk_bytes // SECTOR - PARTITION_START
    if sectors <= 0 or sectors >= 2**32:
        raise InputError(f"a base disk of {disk_bytes} bytes cannot carry an MBR partition")
    lba_only = b"\xfe\xff\xff"
    entry = struct.pack("<B3sB3sII", 0x80, lba_only, 0x83, lba_only, PARTITION_START, sectors)
    return bytes(446) + entry + bytes(48) + b"\x55\xaa"


def customise(rootfs: Path, recipe: Recipe) -> None:
    """Write the recipe's files and variables into the tree and enable the first-boot unit."""
    (rootfs / "root/.ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
    (rootfs / "root/.ssh").chmod(0o700)
    for relative, (content, mode) in recipe.files().items():
        path = rootfs / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        path.chmod(mode)
    for relative, values in recipe.variables.items():
        path = rootfs / relative
        path.write_text(set_variables(path.read_text(encoding="utf-8"), values), encoding="utf-8")
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "bake-firstboot.service"
    link.unlink(missing_ok=True)
    link.symlink_to("/etc/systemd/system/bake-firstboot.service")


def _literally(replacement: str) -> Callable[[re.Match[str]], str]:
    """A re.sub replacement that inserts `replacement` as it is, backslashes and all."""
    return lambda _match: replacement


def set_variables(text: str, values: dict[str, str]) -> str:
    """Set NAME=value lines in a shell-style config file, appending those it lacks."""
    for name, value in values.items():
        pattern = re.compile(rf"^[ \t]*#?[ \t]*{re.escape(name)}=.*$", re.MULTILINE)
        line = f"{name}={value}"
        text, count = pattern.subn(_literally(line), text, count=1)
        if not count:
            text = text.rstrip("\n") + f"\n{line}\n"
    return text


def newest_kernel(boot_dir: Path) -> tuple[Path, Path]:
    """The newest vmlinuz in `boot_dir` and its initrd."""
    kernels = sorted(boot_dir.glob("vmlinuz-*"), key=lambda p: _version_key(p.name))
    if not kernels:
        raise BakeError(f"no kernel in {boot_dir}: did mmdebstrap install linux-image-*?")
    kernel = kernels[-1]
    initrd = boot_dir / kernel.name.replace("vmlinuz-", "initrd.img-", 1)
    if not initrd.is_file():
        raise BakeError(f"{kernel.name} has no initrd in {boot_dir}")
    return kernel, initrd


def require_root(euid: int) -> None:
    if euid != 0:
        raise BakeError(
            "building the local base disk needs root (mmdebstrap makes a root-owned tree)",
            hint="run this bake as root, or with sudo",
        )


def build(
    runner: Runner,
    state: StateDir,
    history: History,
    settings: LocalSettings,
    public_key: Path,
    suite: str = "bookworm",
    console_line: Callable[[str], None] = print,
) -> BaseDisk:
    """The base disk for these inputs: from the store when built before, else built now."""
    recipe = Recipe(suite, settings.mirror, settings.disk_size_gb, public_key.read_text())
    digest = recipe.digest()
    store = ImageStore(state.store, history)
    index_path = state.store / INDEX_NAME
    sha = _read_index(index_path).get(digest)
    if sha and store.exists(sha):
        return BaseDisk(store.path(sha), sha, digest, suite)
    require_root(os.geteuid())
    with locks.waiting(state.locks, f"base-disk-{digest[:16]}"):
        sha = _read_index(index_path).get(digest)
        if sha and store.exists(sha):
            return BaseDisk(store.path(sha), sha, digest, suite)
        return _build_and_store(runner, state, history, settings, recipe, store, console_line)


def _build_and_store(
    runner: Runner,
    state: StateDir,
    history: History,
    settings: LocalSettings,
    recipe: Recipe,
    store: ImageStore,
    console_line: Callable[[str], None],
) -> BaseDisk:
    """Build the disk in a work dir removed on every path, store it with its package list, index
    it by its digest."""
    suite, digest, index_path = recipe.suite, recipe.digest(), state.store / INDEX_NAME
    console_line(f"base disk debian-{suite} {digest[:12]}: not built yet, building")
    logs = state.logs / f"base-disk-{digest[:12]}"
    logs.mkdir(parents=True, exist_ok=True)
    with state.scratch(f"base-{digest[:16]}") as work:
        disk, packages = _build_in(work, logs, runner, state, settings, recipe, console_line)
        sha = store.put(disk, IMAGE_PREFIX + suite)
    Inventory(history.path).record(sha, IMAGE_PREFIX + suite, packages)
    index = _read_index(index_path)
    index[digest] = sha
    _write_index(index_path, index)
    console_line(f"base disk debian-{suite} {digest[:12]}: stored as {sha[:12]}")
    return BaseDisk(store.path(sha), sha, digest, suite)


def _build_in(
    work: Path,
    logs: Path,
    runner: Runner,
    state: StateDir,
    settings: LocalSettings,
    recipe: Recipe,
    console_line: Callable[[str], None],
) -> tuple[Path, list[Package]]:
    """Tree, partitioned raw disk, first boot, qcow2: the path of the finished qcow2 and the
    packages installed in the tree (read by the host's dpkg-query from the tree's database)."""
    rootfs, raw, qcow2 = work / "rootfs", work / "disk.raw", work / "base.qcow2"
    size_mb = recipe.disk_size_gb * 1024
    with _phase(console_line, f"mmdebstrap {recipe.suite}"):
        runner.stream(
            recipe.mmdebstrap_argv(rootfs),
            on_line=lambda _line: None,
            log_path=logs / "mmdebstrap.log",
            timeout=MMDEBSTRAP_TIMEOUT,
        )
        customise(rootfs, recipe)
        listed = runner.run(
            ["dpkg-query", f"--admindir={rootfs / 'var/lib/dpkg'}", "-W", f"-f={DPKG_QUERY_FORMAT}"]
        )
        packages = parse_dpkg_query(listed.stdout)
    with _phase(console_line, f"filesystem ({recipe.disk_size_gb} GB disk)"):
        with open(raw, "wb") as disk:
            disk.truncate(size_mb * 1024 * 1024)
            disk.write(master_boot_record(size_mb * 1024 * 1024))
        offset = PARTITION_START * SECTOR
        runner.run(
            ["mke2fs", "-q", "-F", "-t", "ext4", "-E", f"offset={offset}",
             "-d", str(rootfs), str(raw), f"{size_mb - 1}M"]
        )  # fmt: skip
    accelerator = qemu.choose_accelerator(runner, state.local, settings.accelerator)
    with _phase(console_line, f"first boot under {accelerator} (installs grub)"):
        _first_boot(runner, raw, rootfs, logs / "firstboot-console.log", settings, accelerator)
    with _phase(console_line, "qcow2"):
        runner.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)])
    return qcow2, packages


def _first_boot(
    runner: Runner,
    raw: Path,
    rootfs: Path,
    log_path: Path,
    settings: LocalSettings,
    accelerator: str,
) -> None:
    kernel, initrd = newest_kernel(rootfs / "boot")
    console = qemu.run_to_poweroff(
        runner, raw, accelerator=accelerator, memory=settings.memory, cpus=settings.cpus,
        log_path=log_path, timeout=2 * settings.boot_timeout,
        kernel=kernel, initrd=initrd, append=first_boot_append(accelerator), disk_format="raw",
    )  # fmt: skip
    if not re.search(rf"(^|: ){FIRSTBOOT_MARK}\s*$", console, re.MULTILINE):
        last = "\n  ".join(console.replace("\r", "").strip().splitlines()[-10:])
        raise BakeError(
            f"the base disk's first boot did not install grub ({FIRSTBOOT_MARK} never appeared);"
            f" last console lines:\n  {last}",
            hint=f"console log: {log_path}",
        )


def first_boot_append(accelerator: str) -> str:
    """The first boot's kernel command line: under TCG without address space randomisation, so
    each of grub-install's and update-grub's programs reuses QEMU's translations (this boot's
    only; the disk boots with its own command line)."""
    return f"{KERNEL_APPEND} norandmaps" if accelerator == "tcg" else KERNEL_APPEND


@contextmanager
def _phase(console_line: Callable[[str], None], name: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    console_line(f"    {name}: {time.monotonic() - started:.0f}s")


def _version_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)]


def _read_index(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_index(path: Path, index: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)
