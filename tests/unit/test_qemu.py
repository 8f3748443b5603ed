from __future__ import annotations

import json
from pathlib import Path

import pytest

from bake.errors import BakeError, CommandTimedOut, InputError
from bake.local import qemu
from tests.unit.fakes import FakeRunner


@pytest.fixture
def kvm_device(tmp_path: Path) -> Path:
    """A stand-in for /dev/kvm that this process can open read-write."""
    device = tmp_path / "kvm"
    device.write_bytes(b"")
    return device


@pytest.fixture
def boot_id(tmp_path: Path) -> Path:
    path = tmp_path / "boot_id"
    path.write_text("11111111-2222-3333-4444-555555555555\n")
    return path


def _choose(runner: FakeRunner, tmp_path: Path, setting: str, environ=None, **paths) -> str:
    return qemu.choose_accelerator(
        runner, tmp_path / "state", setting, environ=environ or {}, **paths
    )


def test_probe_boot_sector_spins_then_writes_0x10_to_the_exit_port() -> None:
    sector = qemu.probe_boot_sector(loops=1000)

    assert len(sector) == 512
    assert sector[510:] == b"\x55\xaa"
    assert sector[:6] == b"\x66\xb9\xe8\x03\x00\x00"  # mov ecx, 1000
    assert b"\xba\xf4\x00\xb0\x10\xee\xf4\xeb\xfe" in sector[:32]
    assert set(sector[32:510]) == {0}


def test_environment_overrides_config(tmp_path: Path) -> None:
    runner = FakeRunner()

    assert _choose(runner, tmp_path, "kvm", {"BAKE_ACCELERATOR": "tcg"}) == "tcg"
    assert _choose(runner, tmp_path, "tcg", {"BAKE_ACCELERATOR": "kvm"}) == "kvm"
    assert runner.calls == []


def test_config_choice_is_used_without_probing(tmp_path: Path) -> None:
    runner = FakeRunner()

    assert _choose(runner, tmp_path, "kvm") == "kvm"
    assert runner.calls == []


def test_unknown_environment_value_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="BAKE_ACCELERATOR=hvf"):
        _choose(FakeRunner(), tmp_path, "auto", {"BAKE_ACCELERATOR": "hvf"})


def test_auto_without_a_usable_kvm_device_is_tcg(tmp_path: Path, boot_id: Path) -> None:
    runner = FakeRunner()

    chosen = _choose(runner, tmp_path, "auto", kvm_device=tmp_path / "no-kvm", boot_id_path=boot_id)

    assert chosen == "tcg"
    assert runner.calls == []


def test_auto_probe_result_is_cached_per_boot_id(
    tmp_path: Path, kvm_device: Path, boot_id: Path
) -> None:
    runner = FakeRunner().on(qemu.QEMU, returncode=qemu.PROBE_PASSED)
    paths = {"kvm_device": kvm_device, "boot_id_path": boot_id}

    assert _choose(runner, tmp_path, "auto", **paths) == "kvm"
    assert _choose(runner, tmp_path, "auto", **paths) == "kvm"
    assert len(runner.commands(qemu.QEMU)) == 1
    cache = json.loads((tmp_path / "state" / "accelerator.json").read_text())
    assert cache["boot_id"] == "11111111-2222-3333-4444-555555555555"

    boot_id.write_text("another-boot\n")
    runner.on(qemu.QEMU, returncode=1)
    assert _choose(runner, tmp_path, "auto", **paths) == "tcg"
    assert len(runner.commands(qemu.QEMU)) == 2


def test_probe_command_line_uses_kvm_and_debug_exit(tmp_path: Path, kvm_device: Path) -> None:
    runner = FakeRunner().on(qemu.QEMU, returncode=qemu.PROBE_PASSED)

    result = qemu.probe(runner, tmp_path, kvm_device=kvm_device)

    assert result.accelerator == "kvm"
    (argv,) = runner.calls
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert "isa-debug-exit,iobase=0xf4,iosize=0x04" in argv
    assert any(a.startswith("file=") and a.endswith(",format=raw,if=ide") for a in argv)
    assert list(tmp_path.glob("bake-probe-*")) == []


def test_probe_timeout_chooses_tcg_and_says_why(tmp_path: Path, kvm_device: Path) -> None:
    runner = FakeRunner().on(qemu.QEMU, raises=CommandTimedOut([qemu.QEMU], 15))

    result = qemu.probe(runner, tmp_path, kvm_device=kvm_device, timeout=15)

    assert result.accelerator == "tcg"
    assert "did not finish within 15s" in result.reason
    assert "guests do not run at speed" in result.reason


def test_probe_other_exit_status_chooses_tcg(tmp_path: Path, kvm_device: Path) -> None:
    runner = FakeRunner().on(qemu.QEMU, returncode=1, stderr="failed to initialize kvm")

    result = qemu.probe(runner, tmp_path, kvm_device=kvm_device)

    assert result == qemu.Probe(
        "tcg", "a test guest under KVM exited with status 1: failed to initialize kvm"
    )


def _boot(runner: FakeRunner, tmp_path: Path, **options):
    disk = tmp_path / "artifact.qcow2"
    disk.write_bytes(b"artifact")
    defaults = {
        "work_dir": tmp_path / "vm",
        "accelerator": "tcg",
        "memory": 1024,
        "cpus": 2,
        "log_path": tmp_path / "console.log",
        "key": tmp_path / "id_ed25519",
        "ssh_config": tmp_path / "ssh_config",
        "boot_timeout": 5,
    }
    return qemu.boot(runner, disk, **{**defaults, **options})


def _qemu_img_creates_overlay(argv: list[str]) -> None:
    Path(argv[-1]).write_bytes(b"overlay")


def test_boot_uses_an_overlay_and_forwards_ssh(tmp_path: Path) -> None:
    runner = FakeRunner().on("qemu-img", effect=_qemu_img_creates_overlay)

    with _boot(runner, tmp_path) as vm:
        overlay = tmp_path / "vm" / "overlay.qcow2"
        assert overlay.exists()
        (create,) = runner.commands("qemu-img")
        assert create == [
            "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
            "-b", str(tmp_path / "artifact.qcow2"), str(overlay),
        ]  # fmt: skip
        (argv,) = runner.commands(qemu.QEMU)
        assert f"file={overlay},format=qcow2,if=virtio" in argv
        assert f"user,id=n0,hostfwd=tcp:127.0.0.1:{vm.ssh.port}-:22" in argv
        assert "virtio-net-pci,netdev=n0" in argv
        assert argv[argv.index("-accel") + 1] == "tcg"
        assert argv[argv.index("-smp") + 1] == "2"
        assert argv[argv.index("-m") + 1] == "1024"
        assert f"file,id=console,path={tmp_path / 'console.log'}" in argv
        assert (vm.ssh.host, vm.ssh.user) == ("127.0.0.1", "root")

    assert not overlay.exists()
    assert runner.processes[0].stopped
    assert "systemctl poweroff" not in runner.calls[-1], "a throwaway overlay needs no shutdown"
    assert (tmp_path / "artifact.qcow2").read_bytes() == b"artifact"


def test_a_log_collector_is_forwarded_in_the_guest_network_it_needs(tmp_path: Path) -> None:
    """169.254.169.253 must lie in the guest's network, as the metadata service's address does."""
    collector = "/venv/bin/python -m bake.local.logsink /state/local/logs/i-1"
    argv = qemu.machine_argv(
        tmp_path / "disk.qcow2", drive_format="qcow2", accelerator="tcg", memory=512, cpus=1,
        log_path=tmp_path / "console.log", ssh_port=2222, logs=collector,
    )  # fmt: skip
    assert argv[argv.index("-netdev") + 1] == (
        "user,id=n0,net=169.254.0.0/16,host=169.254.0.1,dhcpstart=169.254.0.15,"
        f"hostfwd=tcp:127.0.0.1:2222-:22,guestfwd=tcp:169.254.169.253:514-cmd:{collector}"
    )
    runner = FakeRunner().on("qemu-img", effect=_qemu_img_creates_overlay)
    with _boot(runner, tmp_path, metadata="/py -m bake.local.imds /m.json", logs=collector):
        pass
    (booted,) = runner.commands(qemu.QEMU)
    assert booted[booted.index("-netdev") + 1].endswith(
        "guestfwd=tcp:169.254.169.254:80-cmd:/py -m bake.local.imds /m.json,"
        f"guestfwd=tcp:169.254.169.253:514-cmd:{collector}"
    )


def test_boot_cleans_up_when_the_body_raises(tmp_path: Path) -> None:
    runner = FakeRunner().on("qemu-img", effect=_qemu_img_creates_overlay)

    with pytest.raises(KeyboardInterrupt), _boot(runner, tmp_path):
        raise KeyboardInterrupt

    assert not (tmp_path / "vm" / "overlay.qcow2").exists()
    assert runner.processes[0].stopped


def test_boot_fails_clearly_when_the_vm_dies(tmp_path: Path) -> None:
    runner = FakeRunner().on(qemu.QEMU, exits=1)
    runner.on("qemu-img", effect=_qemu_img_creates_overlay)
    (tmp_path / "console.log").write_text("Kernel panic - not syncing: VFS\n")

    with (
        pytest.raises(BakeError, match="stopped before SSH answered") as failure,
        _boot(runner, tmp_path),
    ):
        pytest.fail("the body must not run when the VM died")

    assert "Kernel panic" in failure.value.message
    assert runner.commands("ssh") == []
    assert not (tmp_path / "vm" / "overlay.qcow2").exists()


def test_boot_without_overlay_and_with_direct_kernel(tmp_path: Path) -> None:
    runner = FakeRunner()
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"

    with _boot(
        runner, tmp_path, overlay=False, kernel=kernel, initrd=initrd, append="root=/dev/vda1"
    ):
        pass

    assert runner.commands("qemu-img") == []
    (argv,) = runner.commands(qemu.QEMU)
    assert f"file={tmp_path / 'artifact.qcow2'},format=qcow2,if=virtio" in argv
    assert argv[argv.index("-kernel") + 1] == str(kernel)
    assert argv[argv.index("-initrd") + 1] == str(initrd)
    assert argv[argv.index("-append") + 1] == "root=/dev/vda1"
    assert runner.calls[-1][-1] == "systemctl poweroff", "the disk itself is shut down cleanly"
    assert runner.processes[0].stopped


def test_run_to_poweroff_writes_the_disk_and_returns_the_console(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    runner = FakeRunner().on(qemu.QEMU, effect=lambda argv: log.write_text("reboot: Power down\n"))
    disk = tmp_path / "disk.raw"

    text = qemu.run_to_poweroff(
        runner, disk, accelerator="tcg", memory=1024, cpus=2, log_path=log, timeout=60
    )

    assert text == "reboot: Power down\n"
    (argv,) = runner.calls
    assert "-no-reboot" in argv
    assert f"file={disk},format=raw,if=virtio" in argv


def test_run_to_poweroff_timeout_quotes_the_console(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("Begin: Loading essential drivers\n")
    runner = FakeRunner().on(qemu.QEMU, raises=CommandTimedOut([qemu.QEMU], 1))

    with pytest.raises(BakeError, match="did not power off within 1s") as failure:
        qemu.run_to_poweroff(
            runner, tmp_path / "d", accelerator="tcg", memory=512, cpus=1, log_path=log, timeout=1
        )
    assert "Loading essential drivers" in failure.value.message


def test_commas_in_paths_are_doubled_for_qemu(tmp_path: Path) -> None:
    argv = qemu.machine_argv(
        Path("/a,b/disk.qcow2"), drive_format="qcow2", accelerator="tcg", memory=512, cpus=1,
        log_path=Path("/logs/console.log"),
    )  # fmt: skip

    assert "file=/a,,b/disk.qcow2,format=qcow2,if=virtio" in argv


def test_probe_that_cannot_start_qemu_says_so(tmp_path: Path, kvm_device: Path) -> None:
    runner = FakeRunner().on(qemu.QEMU, raises=BakeError("qemu-system-x86_64 is not installed"))

    result = qemu.probe(runner, tmp_path, kvm_device=kvm_device, timeout=15)

    assert result == qemu.Probe(
        "tcg", "the KVM probe could not run: qemu-system-x86_64 is not installed"
    )
