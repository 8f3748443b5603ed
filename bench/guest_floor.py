"""What no local bake on this machine goes below: a boot of the base disk, and programs in it.

    .venv/bin/python bench/guest_floor.py [--config bake.toml] [--state DIR] [--image base]
                                          [--models "default max"]

For each QEMU CPU model in MODELS (`default` is QEMU's own, which build machines use), one machine
on a throwaway overlay of IMAGE's source disk (the local base disk), booted with the accelerator,
memory and cores of a build machine:

1. seconds from QEMU's start to the kernel's first console line, to sshd started, to a first login;
2. in the machine, with address space randomisation off as in a build: 300 execs of `/bin/true`,
   `compileall` of three standard library packages, and `dpkg-deb -x` of the newest kernel package
   in the host's package cache (left out when the cache has none: run a build first).

A bake boots twice (the build, then the fresh verification), so twice the first figure is spent
before any step does its work; the others are what a package upgrade does at the machine's speed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import REPO, app, arguments

sys.path.insert(0, str(REPO))

from bake import localhost, ssh  # noqa: E402
from bake.local import qemu  # noqa: E402
from bake.runner import Runner  # noqa: E402

BOOT_TIMEOUT = 600.0
COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # systemd colours its status lines
WORKLOADS = {
    "300 execs of /bin/true": "for i in $(seq 300); do /bin/true; done",
    "compileall email, json, asyncio": (
        "python3 -m compileall -q -f /usr/lib/python3.11/email /usr/lib/python3.11/json"
        " /usr/lib/python3.11/asyncio >/dev/null"
    ),
}


def newest_kernel_package(state: Path) -> Path | None:
    packages = sorted(
        (state / "cache" / "packages").rglob("linux-image-[0-9]*.deb"),
        key=lambda path: path.stat().st_mtime,
    )
    return packages[-1] if packages else None


@dataclass(frozen=True)
class Hardware:
    """What a build machine gets: the accelerator, memory (MiB) and cores."""

    accelerator: str
    memory: int
    cpus: int


class Machine:
    """One machine from `disk` on an overlay in `work`, and how soon it came up."""

    def __init__(self, disk: Path, work: Path, model: str, key: Path, hardware: Hardware) -> None:
        self.key, self.port = key, localhost.free_port()
        self.console = work / f"console-{model}.log"
        argv = qemu.machine_argv(
            qemu.create_overlay(Runner(), disk, "qcow2", work / f"overlay-{model}.qcow2"),
            drive_format="qcow2",
            accelerator=hardware.accelerator,
            memory=hardware.memory,
            cpus=hardware.cpus,
            log_path=self.console,
            ssh_port=self.port,
        )
        if model != "default":
            argv += ["-cpu", model]
        self.started = time.monotonic()
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ssh_argv(self, *command: str) -> list[str]:
        """ssh with the toolkit's options for throwaway machines, but no shared connection: each
        command is a login of its own, which is what is timed."""
        options = [f"-o{name}={value}" for name, value in ssh.SSH_OPTIONS.items()]
        login = ["-i", str(self.key), "-p", str(self.port), "root@127.0.0.1"]
        return ["ssh", "-q", *options, *login, *command]

    def until(self, ready: Callable[[], bool]) -> float:
        """Seconds since QEMU started at which `ready()` first held."""
        while not ready():
            if self.process.poll() is not None:
                sys.exit(f"QEMU exited with {self.process.returncode}; console: {self.console}")
            if time.monotonic() - self.started > BOOT_TIMEOUT:
                sys.exit(f"no login within {BOOT_TIMEOUT:.0f}s; console: {self.console}")
            time.sleep(0.1)
        return time.monotonic() - self.started

    def console_says(self, text: str) -> bool:
        """Whether the console has printed `text` (its colours taken out)."""
        if not self.console.exists():
            return False
        return text in COLOURS.sub("", self.console.read_text(errors="replace"))

    def answers(self) -> bool:
        return subprocess.run(self.ssh_argv("true"), check=False).returncode == 0

    def seconds(self, command: str) -> float:
        """Seconds `command` took in the machine, timed there."""
        timed = f"s=$(date +%s%N); {command}; e=$(date +%s%N); echo $(( (e - s) / 1000000 ))"
        done = subprocess.run(self.ssh_argv(timed), capture_output=True, text=True, check=True)
        return int(done.stdout.split()[-1]) / 1000

    def copy_in(self, path: Path, target: str) -> None:
        argv = self.ssh_argv(f"cat > {target}")
        with path.open("rb") as stream:
            subprocess.run(argv, stdin=stream, check=True)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def measure(machine: Machine, kernel: Path | None) -> list[tuple[str, float]]:
    kernel_up = machine.until(lambda: machine.console_says("Linux version"))
    sshd_up = machine.until(lambda: machine.console_says("Started ssh.service"))
    figures = [
        ("QEMU start to the kernel's first line", kernel_up),
        ("QEMU start to sshd started", sshd_up),
        ("QEMU start to a first login", machine.until(machine.answers)),
    ]
    started = time.monotonic()
    machine.answers()
    figures.append(("one more SSH login", time.monotonic() - started))
    machine.seconds("sysctl -qw kernel.randomize_va_space=0")
    figures += [(name, machine.seconds(command)) for name, command in WORKLOADS.items()]
    if kernel is not None:
        machine.copy_in(kernel, "/root/kernel.deb")
        command = "dpkg-deb -x /root/kernel.deb /root/kernel && sync"
        figures.append(("dpkg-deb -x of the kernel package", machine.seconds(command)))
    return figures


def main() -> int:
    args = arguments(__doc__.splitlines()[0], image="base", models="default max")
    project = app(args.config, args.state)
    source = project.target.resolve_base(project.config.image(args.image))
    disk = Path(source.variables["source_disk"]).resolve()
    key, _ = project.target.keypair
    local = project.config.local
    hardware = Hardware(project.target.accelerator, local.memory, local.cpus)
    kernel = newest_kernel_package(args.state)
    print(f"{args.image}'s source disk {disk.name}: {hardware}")
    print(f"kernel package: {kernel.name if kernel else 'none in the package cache'}")
    results: dict[str, list[tuple[str, float]]] = {}
    (args.state / "work").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.state / "work") as work:
        for model in args.models.split():
            machine = Machine(disk, Path(work), model, key, hardware)
            try:
                results[model] = measure(machine, kernel)
            finally:
                machine.stop()
    names = [name for name, _ in next(iter(results.values()))]
    print(f"\n{'':46}" + "".join(f"{model:>10}" for model in results))
    for row, name in enumerate(names):
        print(f"{name:46}" + "".join(f"{figures[row][1]:9.1f}s" for figures in results.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
