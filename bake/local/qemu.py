"""QEMU machines on this host: choosing an accelerator that really runs guests, and booting VMs.

KVM is chosen by running a tiny guest under it, never by the presence of /dev/kvm alone: on nested
hosts /dev/kvm opens but guests crawl. A VM is a context manager that always powers off, stops
QEMU and deletes its overlay, so the artifact it boots from is never written.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from bake import localhost, signals, ssh
from bake.errors import BakeError, CommandTimedOut, InputError
from bake.local import logsink
from bake.runner import Process, Runner
from bake.ssh import SshHost

QEMU = "qemu-system-x86_64"
ACCELERATORS = ("kvm", "tcg")
ACCELERATOR_ENV = "BAKE_ACCELERATOR"
KVM_DEVICE = Path("/dev/kvm")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
CACHE_NAME = "accelerator.json"
PROBE_TIMEOUT = 15.0
PROBE_LOOPS = 100_000_000
DEBUG_EXIT_PORT = 0xF4
DEBUG_EXIT_VALUE = 0x10
PROBE_PASSED = (DEBUG_EXIT_VALUE << 1) | 1
POWEROFF_WAIT = 30.0
# The instance metadata service's address, and the guest network QEMU needs around it.
METADATA_ADDRESS = "169.254.169.254"
METADATA_NET = "169.254.0.0/16"
METADATA_GATEWAY = "169.254.0.1"
METADATA_GUEST = "169.254.0.15"


@dataclass(frozen=True)
class Probe:
    """The accelerator a probe chose, and why, in one line."""

    accelerator: str
    reason: str


@dataclass
class VM:
    """A running machine: how to reach it, its QEMU process, and its serial console log."""

    ssh: SshHost
    process: Process
    log_path: Path


def probe_boot_sector(loops: int = PROBE_LOOPS) -> bytes:
    """A 512-byte boot sector that spins `loops` times, then writes 0x10 to the debug-exit port.

    The loop makes the probe measure that guest code runs at speed: on nested hosts a bare
    `out` exits at once under KVM while a real kernel never gets through its boot.
    """
    code = (
        b"\x66\xb9" + struct.pack("<I", loops)  # mov ecx, loops
        + b"\x66\x49\x75\xfc"  # dec ecx; jnz back to the dec
        + b"\xba" + struct.pack("<H", DEBUG_EXIT_PORT)  # mov dx, 0xf4
        + bytes([0xB0, DEBUG_EXIT_VALUE])  # mov al, 0x10
        + b"\xee\xf4\xeb\xfe"  # out dx, al; hlt; jmp $
    )  # fmt: skip
    return code + bytes(510 - len(code)) + b"\x55\xaa"


def kvm_usable(device: Path = KVM_DEVICE) -> bool:
    """Whether the KVM device can be opened read-write by this process."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def probe(
    runner: Runner,
    work_dir: Path | None = None,
    *,
    kvm_device: Path = KVM_DEVICE,
    timeout: float = PROBE_TIMEOUT,
) -> Probe:
    """Boot the probe sector under KVM; "kvm" only if it finishes within `timeout`."""
    if not kvm_usable(kvm_device):
        return Probe("tcg", f"{kvm_device} cannot be opened read-write")
    with tempfile.TemporaryDirectory(prefix="bake-probe-", dir=work_dir) as scratch:
        image = Path(scratch) / "probe.img"
        image.write_bytes(probe_boot_sector())
        argv = [
            QEMU, "-accel", "kvm", "-display", "none", "-no-reboot", "-nodefaults",
            "-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04",
            "-drive", f"file={_option_path(image)},format=raw,if=ide",
        ]  # fmt: skip
        try:
            result = runner.run(argv, check=False, timeout=timeout)
        except CommandTimedOut:
            return Probe(
                "tcg",
                f"a test guest under KVM did not finish within {timeout:.0f}s"
                " (/dev/kvm opens but guests do not run at speed)",
            )
        except BakeError as exc:
            return Probe("tcg", f"the KVM probe could not run: {exc.message}")
    if result.returncode == PROBE_PASSED:
        return Probe("kvm", f"a test guest ran under KVM in {result.seconds:.1f}s")
    detail = _last_line(result.stderr)
    return Probe(
        "tcg",
        f"a test guest under KVM exited with status {result.returncode}"
        + (f": {detail}" if detail else ""),
    )


def choose_accelerator(
    runner: Runner,
    state_dir: Path,
    setting: str,
    *,
    environ: Mapping[str, str] | None = None,
    kvm_device: Path = KVM_DEVICE,
    boot_id_path: Path = BOOT_ID,
) -> str:
    """The accelerator for this host: $BAKE_ACCELERATOR, else the config, else a cached probe.

    The probe's answer is kept in `state_dir/accelerator.json` for the current host boot.
    """
    environ = os.environ if environ is None else environ
    override = environ.get(ACCELERATOR_ENV, "").strip()
    if override:
        if override not in ACCELERATORS:
            raise InputError(
                f"{ACCELERATOR_ENV}={override} is not an accelerator",
                hint=f"use one of {', '.join(ACCELERATORS)}",
            )
        return override
    if setting in ACCELERATORS:
        return setting
    if setting != "auto":
        raise InputError(f"local.accelerator = '{setting}' is not one of auto, kvm, tcg")
    if not kvm_usable(kvm_device):
        return "tcg"
    boot_id = boot_id_path.read_text(encoding="utf-8").strip()
    cache = state_dir / CACHE_NAME
    cached = _read_json(cache)
    if cached.get("boot_id") == boot_id and cached.get("accelerator") in ACCELERATORS:
        return cached["accelerator"]
    state_dir.mkdir(parents=True, exist_ok=True)
    result = probe(runner, state_dir, kvm_device=kvm_device)
    payload = {"boot_id": boot_id, "accelerator": result.accelerator, "reason": result.reason}
    cache.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return result.accelerator


def machine_argv(
    drive: Path,
    *,
    drive_format: str,
    accelerator: str,
    memory: int,
    cpus: int,
    log_path: Path,
    ssh_port: int | None = None,
    forwards: Mapping[int, int] | None = None,
    metadata: str | None = None,
    logs: str | None = None,
    tb_size: int | None = None,
    kernel: Path | None = None,
    initrd: Path | None = None,
    append: str | None = None,
    no_reboot: bool = False,
) -> list[str]:
    """The QEMU command line of a headless machine with its serial console in `log_path`.

    `forwards` maps more host ports on 127.0.0.1 to guest ports. `metadata` is the command that
    answers each connection the guest opens to 169.254.169.254:80 (the instance metadata
    service), `logs` the one that takes each connection to 169.254.169.253:514 (the log
    collector); with either, the guest network is 169.254.0.0/16, which QEMU requires of those
    addresses. `tb_size` caps TCG's translation cache (MiB), which otherwise grows to 1 GiB.
    """
    netdev = "user,id=n0"
    if metadata is not None or logs is not None:
        netdev += f",net={METADATA_NET},host={METADATA_GATEWAY},dhcpstart={METADATA_GUEST}"
    ports = {**({ssh_port: 22} if ssh_port is not None else {}), **(forwards or {})}
    netdev += "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in ports.items())
    if metadata is not None:
        netdev += f",guestfwd=tcp:{METADATA_ADDRESS}:80-cmd:{metadata}"
    if logs is not None:
        netdev += f",guestfwd=tcp:{logsink.GUEST_ADDRESS}:{logsink.GUEST_PORT}-cmd:{logs}"
    accel = accelerator
    if tb_size is not None and accelerator == "tcg":
        accel += f",tb-size={tb_size}"
    argv = [
        QEMU, "-accel", accel, "-smp", str(cpus), "-m", str(memory),
        "-display", "none", "-monitor", "none",
        "-chardev", f"file,id=console,path={_option_path(log_path)}", "-serial", "chardev:console",
        "-drive", f"file={_option_path(drive)},format={drive_format},if=virtio",
        "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    if no_reboot:
        argv.append("-no-reboot")
    if kernel is not None:
        argv += ["-kernel", str(kernel)]
        if initrd is not None:
            argv += ["-initrd", str(initrd)]
        if append is not None:
            argv += ["-append", append]
    return argv


@contextmanager
def boot(
    runner: Runner,
    disk: Path,
    *,
    work_dir: Path,
    accelerator: str,
    memory: int,
    cpus: int,
    log_path: Path,
    key: Path,
    ssh_config: Path,
    user: str = "root",
    boot_timeout: float,
    kernel: Path | None = None,
    initrd: Path | None = None,
    append: str | None = None,
    overlay: bool = True,
    disk_format: str = "qcow2",
    metadata: str | None = None,
    logs: str | None = None,
    record: Callable[[int], None] | None = None,
) -> Iterator[VM]:
    """Boot a machine from `disk` and yield it once SSH answers; stop it on every path.

    With `overlay` the machine writes to a throwaway qcow2 on top of `disk`, never to `disk`, and
    QEMU is simply stopped at the end; without, the machine is powered off first.
    `metadata` serves the guest's instance metadata and `logs` collects the logs it ships (see
    `machine_argv`). `record(pid)` hears of the QEMU process the moment it starts.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    overlay_path = work_dir / "overlay.qcow2" if overlay else None
    host = SshHost("127.0.0.1", localhost.free_port(), user, key, ssh_config)
    process: Process | None = None
    answered = False
    try:
        drive, drive_format = disk, disk_format
        if overlay_path is not None:
            drive, drive_format = create_overlay(runner, disk, disk_format, overlay_path), "qcow2"
        argv = machine_argv(
            drive, drive_format=drive_format, accelerator=accelerator, memory=memory, cpus=cpus,
            log_path=log_path, ssh_port=host.port, metadata=metadata, logs=logs, kernel=kernel,
            initrd=initrd, append=append,
        )  # fmt: skip
        qemu_log = work_dir / "qemu.log"
        with signals.held():
            process = runner.spawn(argv, log_path=qemu_log)
            if record is not None:
                record(process.pid)
        _wait_until_reachable(runner, host, process, boot_timeout, qemu_log, log_path)
        answered = True
        yield VM(ssh=host, process=process, log_path=log_path)
    finally:
        try:
            if process is not None:
                # A machine on a throwaway overlay is stopped at once: nothing it wrote is kept.
                if answered and overlay_path is not None:
                    ssh.close_shared(runner, host)
                _shut_down(runner, host, process, poweroff=answered and overlay_path is None)
        finally:
            if overlay_path is not None:
                overlay_path.unlink(missing_ok=True)


def run_to_poweroff(
    runner: Runner,
    disk: Path,
    *,
    accelerator: str,
    memory: int,
    cpus: int,
    log_path: Path,
    timeout: float,
    kernel: Path | None = None,
    initrd: Path | None = None,
    append: str | None = None,
    disk_format: str = "raw",
) -> str:
    """Boot `disk` (written in place, no overlay) until the guest powers off; its console text."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = machine_argv(
        disk, drive_format=disk_format, accelerator=accelerator, memory=memory, cpus=cpus,
        log_path=log_path, kernel=kernel, initrd=initrd, append=append, no_reboot=True,
    )  # fmt: skip
    try:
        result = runner.run(argv, check=False, timeout=timeout)
    except CommandTimedOut as exc:
        raise BakeError(
            f"the machine did not power off within {timeout:.0f}s{_tail(log_path)}",
            hint=f"console log: {log_path}",
        ) from exc
    if not result.ok:
        raise BakeError(
            f"QEMU exited with status {result.returncode}: {_last_line(result.stderr)}",
            hint=f"console log: {log_path}",
        )
    return _read_text(log_path)


def create_overlay(runner: Runner, disk: Path, disk_format: str, overlay_path: Path) -> Path:
    """A qcow2 at `overlay_path` that writes on top of `disk`, which stays as it is."""
    overlay_path.unlink(missing_ok=True)
    runner.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", disk_format,
         "-b", str(disk.resolve()), str(overlay_path)]
    )  # fmt: skip
    return overlay_path


def _wait_until_reachable(
    runner: Runner, host: SshHost, process: Process, timeout: float, qemu_log: Path, log_path: Path
) -> None:
    try:
        ssh.wait_for_ssh(runner, host, timeout=timeout, alive=lambda: process.poll() is None)
    except BakeError as exc:
        qemu_said = _last_line(_read_text(qemu_log))
        detail = f"; QEMU said: {qemu_said}" if qemu_said else ""
        raise BakeError(
            f"{exc.message}{detail}{_tail(log_path)}", hint=f"console log: {log_path}"
        ) from exc


def _shut_down(runner: Runner, host: SshHost, process: Process, *, poweroff: bool) -> None:
    """Ask the guest to power off, give QEMU a moment to exit, then stop it regardless."""
    try:
        if poweroff and process.poll() is None:
            with suppress(BakeError):
                ssh.run(runner, host, "systemctl poweroff", check=False, timeout=10)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=POWEROFF_WAIT)
    finally:
        process.stop()


def _option_path(path: Path) -> str:
    """A path inside a QEMU option string, where a comma must be doubled."""
    return str(path).replace(",", ",,")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _tail(log_path: Path, lines: int = 5) -> str:
    text = _read_text(log_path).replace("\r", "").strip().splitlines()[-lines:]
    return ("; last console lines:\n  " + "\n  ".join(text)) if text else ""


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
