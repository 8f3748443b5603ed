"""Real machines on this host: the accelerator probe, the base disk, and a VM booted from it.

Slow (a few minutes under TCG): run with `-m vm`. The base disk is built once per session in the
session's shared end-to-end state dir, where the pipeline tests reuse it. BAKE_EXPECT_ACCELERATOR
names what the probe should find on this host (tcg on the nested build machines, where /dev/kvm
opens but guests do not run).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bake import ssh
from bake.config import LocalSettings
from bake.history import History
from bake.local import basedisk, qemu
from bake.local.basedisk import BaseDisk
from bake.local.store import sha256_of
from bake.runner import Runner
from bake.state import StateDir

pytestmark = pytest.mark.vm

EXPECTED_ACCELERATOR = os.environ.get("BAKE_EXPECT_ACCELERATOR", "tcg")


@dataclass
class Built:
    state: StateDir
    history: History
    settings: LocalSettings
    disk: BaseDisk
    key: Path
    public_key: Path
    ssh_config: Path
    lines: list[str]
    seconds: float


@pytest.fixture(scope="module")
def built(e2e_state_dir: Path) -> Iterator[Built]:
    state = StateDir(e2e_state_dir).ensure()
    history = History(state.history_db)
    runner = Runner()
    key, public_key = ssh.ensure_keypair(runner, state.ssh)
    settings = LocalSettings()
    lines: list[str] = []
    started = time.monotonic()
    disk = basedisk.build(runner, state, history, settings, public_key, console_line=lines.append)
    yield Built(
        state, history, settings, disk, key, public_key, ssh.write_ssh_config(state.ssh), lines,
        time.monotonic() - started,
    )  # fmt: skip


def test_probe_finds_the_accelerator_that_really_runs_guests(tmp_path: Path) -> None:
    started = time.monotonic()
    result = qemu.probe(Runner(), tmp_path)

    assert result.accelerator == EXPECTED_ACCELERATOR, result.reason
    assert time.monotonic() - started < qemu.PROBE_TIMEOUT + 10
    assert list(tmp_path.iterdir()) == []


def test_base_disk_is_built_once_and_kept_by_digest(built: Built) -> None:
    print(f"base disk built in {built.seconds:.0f}s: " + " | ".join(built.lines))
    assert any("first boot" in line for line in built.lines)
    assert built.disk.path.is_file()
    assert not list((built.state.root / "work").glob("base-*"))

    started = time.monotonic()
    again = basedisk.build(
        Runner(), built.state, built.history, built.settings, built.public_key,
        console_line=lambda line: pytest.fail(f"a cache hit must not build: {line}"),
    )  # fmt: skip

    assert again == built.disk
    assert time.monotonic() - started < 5


def test_base_disk_boots_its_own_newest_kernel_through_grub(built: Built, tmp_path: Path) -> None:
    runner = Runner()
    accelerator = qemu.choose_accelerator(runner, built.state.local, built.settings.accelerator)
    started = time.monotonic()
    with qemu.boot(
        runner, built.disk.path, work_dir=tmp_path / "vm", accelerator=accelerator,
        memory=built.settings.memory, cpus=built.settings.cpus,
        log_path=tmp_path / "console.log", key=built.key, ssh_config=built.ssh_config,
        boot_timeout=built.settings.boot_timeout,
    ) as vm:  # fmt: skip
        print(f"SSH answered {time.monotonic() - started:.0f}s after start under {accelerator}")
        running = ssh.run(runner, vm.ssh, "uname -r").stdout.strip()
        newest = ssh.run(runner, vm.ssh, "ls /boot/vmlinuz-* | sort -V | tail -n 1").stdout
        cmdline = ssh.run(runner, vm.ssh, "cat /proc/cmdline").stdout
        grub_cfg = ssh.run(runner, vm.ssh, "test -s /boot/grub/grub.cfg", check=False)
        process = vm.process

    newest = newest.strip().removeprefix("/boot/vmlinuz-")
    assert running == newest
    assert grub_cfg.ok
    assert f"BOOT_IMAGE=/boot/vmlinuz-{newest}" in cmdline
    assert process.poll() is not None
    assert not (tmp_path / "vm" / "overlay.qcow2").exists()
    assert sha256_of(built.disk.path) == built.disk.sha256
