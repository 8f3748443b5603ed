"""The local target's service machines: one QEMU machine for every instance of a service.

A machine boots a copy-on-write overlay of its AMI's disk from the image store, with SSH and HTTP
forwarded to free ports on 127.0.0.1, an instance metadata service at 169.254.169.254 that tells
it who it is, and a log collector at 169.254.169.253:514 that keeps what it ships in
`local/logs/INSTANCE_ID/`, which stays after the machine is gone. Its record (pid, ports,
directories) is written to `machines.json` the moment QEMU starts, so that a restarted supervisor
adopts it and `bake local down` stops it. QEMU runs in its own session and outlives the
supervisor.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bake import localhost, ssh
from bake.config import LocalSettings
from bake.errors import BakeError
from bake.local import imds, logsink, qemu
from bake.local.store import ImageStore
from bake.polling import wait_until
from bake.runner import Runner
from bake.ssh import SshHost
from bake.state import StateDir

RECORD_NAME = "machines.json"
GUEST_HTTP_PORT = 80
# TCG's translation cache per machine (MiB); QEMU's default of 1 GiB made an idle 256 MiB guest
# hold 950 MiB. Counted, with QEMU's own overhead, in what a machine costs the host.
TB_SIZE = 64
QEMU_OVERHEAD = TB_SIZE + 32
POWEROFF_TIMEOUT = 30.0
KILL_GRACE = 5.0


@dataclass(frozen=True)
class Instance:
    """An EC2 instance of a service's Auto Scaling group, as the local cloud describes it."""

    instance_id: str
    service: str
    color: str
    ami: str
    instance_type: str = "t3.micro"
    availability_zone: str = "us-east-1a"
    private_ip: str = qemu.METADATA_GUEST
    launched: str = ""
    launch_template_id: str = ""
    launch_template_version: str = ""
    # From the launch template version the instance runs (see `supervisor.launched_from`).
    user_data: bytes | None = None
    http_tokens: str = "optional"
    http_endpoint: str = "enabled"
    iam_role: str = ""


@dataclass
class Machine:
    """One instance's machine. `state`: booting (QEMU runs, SSH has not answered yet), running,
    stopping, dead (QEMU exited on its own), or failed (it could not start: `error` says why)."""

    instance_id: str
    service: str
    color: str
    ami: str
    directory: str
    pid: int | None = None
    ssh_port: int | None = None
    http_port: int | None = None
    state: str = "booting"
    started: str = ""
    error: str = ""
    logs: str = ""  # the folder its collector writes messages.log into; kept after the machine

    @property
    def path(self) -> Path:
        return Path(self.directory)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_qemu_of(pid: int | None, instance_id: str) -> bool:
    """Whether `pid` is the QEMU of this instance (its command line names its directory)."""
    return localhost.runs(pid, "qemu-system", instance_id)


def ssh_answers(port: int, timeout: float = 0.5) -> bool:
    """Whether sshd in the guest greets on `port` (QEMU accepts connections before the guest
    listens, so only a greeting proves the guest is up)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            return conn.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Fleet:
    """The machines of this state directory: started, watched, stopped, and recorded."""

    def __init__(
        self,
        runner: Runner,
        state: StateDir,
        settings: LocalSettings,
        store: ImageStore,
        *,
        accelerator: str,
        key: Path,
        region: str,
        python: str = sys.executable,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.runner = runner
        self.state = state
        self.settings = settings
        self.store = store
        self.accelerator = accelerator
        self.key = key
        self.region = region
        self.python = python
        self.log = log
        self.directory = state.local / "machines"
        self.machines: dict[str, Machine] = {}
        self._lock = threading.Lock()
        self._saving = threading.Lock()
        self._stopping: dict[str, threading.Thread] = {}

    # the record

    @property
    def record_path(self) -> Path:
        return self.state.local / RECORD_NAME

    def load(self) -> None:
        """Adopt the machines a previous supervisor left running; forget the ones that are gone."""
        for entry in read_records(self.state):
            if entry.state == "failed" or _is_qemu_of(entry.pid, entry.instance_id):
                entry.state = "booting" if entry.state in ("booting", "stopping") else entry.state
                self.machines[entry.instance_id] = entry
            else:
                self._remove_files(entry)
        self.save()

    def save(self) -> None:
        with self._saving:  # stops in the background save too
            with self._lock:
                entries = [machine.to_dict() for machine in self.machines.values()]
            self.state.local.mkdir(parents=True, exist_ok=True)
            partial = self.record_path.with_suffix(".partial")
            partial.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
            os.replace(partial, self.record_path)

    # starting

    def start(self, instance: Instance) -> Machine:
        """Boot a machine for `instance`; a machine that cannot start is recorded as failed."""
        directory = self.directory / instance.instance_id
        machine = Machine(
            instance.instance_id,
            instance.service,
            instance.color,
            instance.ami,
            str(directory),
            started=_now(),
        )
        try:
            self._boot(machine, instance)
        except (BakeError, OSError, ValueError) as exc:
            machine.state, machine.error = "failed", str(exc)
            self.log(f"{instance.instance_id}: cannot start its machine: {exc}")
        with self._lock:
            self.machines[instance.instance_id] = machine
        self.save()
        return machine

    def _boot(self, machine: Machine, instance: Instance) -> None:
        sha256 = self.store.sha_for_ami(instance.ami)
        if sha256 is None or not self.store.exists(sha256):
            raise BakeError(f"{instance.ami} has no disk in the local image store")
        directory = machine.path
        directory.mkdir(parents=True, exist_ok=True)
        document = directory / "metadata.json"
        imds.write_document(document, self._document(instance))
        logs = self.state.machine_logs(instance.instance_id)
        logs.mkdir(parents=True, exist_ok=True)
        machine.logs = str(logs)
        overlay = qemu.create_overlay(
            self.runner, self.store.path(sha256), "qcow2", directory / "disk.qcow2"
        )
        machine.ssh_port, machine.http_port = localhost.free_port(), localhost.free_port()
        argv = qemu.machine_argv(
            overlay,
            drive_format="qcow2",
            accelerator=self.accelerator,
            memory=self.settings.machine_memory,
            cpus=self.settings.machine_cpus,
            log_path=directory / "console.log",
            ssh_port=machine.ssh_port,
            forwards={machine.http_port: GUEST_HTTP_PORT},
            metadata=imds.command(document, self.python),
            logs=logsink.command(logs, python=self.python),
            tb_size=TB_SIZE,
        )
        process = self.runner.spawn(argv, log_path=directory / "qemu.log")
        machine.pid = process.pid
        self.log(
            f"{instance.instance_id}: machine started (pid {process.pid}, {instance.service} "
            f"{instance.color}, {instance.ami}, ssh {machine.ssh_port}, http {machine.http_port})"
        )

    def _document(self, instance: Instance) -> imds.InstanceDocument:
        return imds.new_document(
            instance_id=instance.instance_id,
            ami_id=instance.ami,
            instance_type=instance.instance_type,
            region=self.region,
            availability_zone=instance.availability_zone,
            local_ipv4=instance.private_ip,
            launched=instance.launched or _now(),
            user_data=instance.user_data,
            http_tokens=instance.http_tokens,
            http_endpoint=instance.http_endpoint,
            iam_role=instance.iam_role,
        )

    # watching

    def refresh(self) -> list[Machine]:
        """Bring each machine's state up to date; the machines that died since the last look."""
        died = []
        with self._lock:
            machines = list(self.machines.values())
        for machine in machines:
            if machine.state in ("failed", "dead", "stopping"):
                continue
            if not _is_qemu_of(machine.pid, machine.instance_id):
                machine.state = "dead"
                died.append(machine)
                self.log(f"{machine.instance_id}: its machine exited (pid {machine.pid})")
            elif machine.state == "booting" and ssh_answers(machine.ssh_port or 0):
                machine.state = "running"
                self.log(f"{machine.instance_id}: its machine is up (SSH answers)")
        if died:
            self.save()
        return died

    def host(self, machine: Machine) -> SshHost:
        """How to reach a machine over SSH with the toolkit's key."""
        return SshHost(
            "127.0.0.1",
            machine.ssh_port or 0,
            "root",
            self.key,
            ssh.write_ssh_config(self.state.ssh),
        )

    # stopping

    def stop_later(self, instance_id: str) -> None:
        """Power the machine off in the background; it leaves the record when it is gone."""
        with self._lock:
            machine = self.machines.get(instance_id)
            if machine is None or instance_id in self._stopping:
                return
            machine.state = "stopping"
            thread = threading.Thread(
                target=self.stop, args=(instance_id,), name=f"stop-{instance_id}", daemon=True
            )
            self._stopping[instance_id] = thread
        self.save()
        thread.start()

    def stop(self, instance_id: str) -> None:
        """Power the machine off (SSH, then SIGTERM, then SIGKILL), remove its disk, forget it."""
        with self._lock:
            machine = self.machines.get(instance_id)
        if machine is None:
            return
        machine.state = "stopping"
        self._power_off(machine)
        self._remove_files(machine)
        with self._lock:
            self.machines.pop(instance_id, None)
            self._stopping.pop(instance_id, None)
        self.save()
        self.log(f"{instance_id}: machine stopped")

    def stop_all(self) -> None:
        """Stop every machine, in parallel."""
        threads = [
            threading.Thread(target=self.stop, args=(instance_id,), daemon=True)
            for instance_id in list(self.machines)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def stopping(self) -> set[str]:
        with self._lock:
            return set(self._stopping)

    def _power_off(self, machine: Machine) -> None:
        pid = machine.pid
        if not _is_qemu_of(pid, machine.instance_id) or pid is None:
            return
        if machine.ssh_port and ssh_answers(machine.ssh_port):
            with contextlib.suppress(BakeError):
                ssh.run(
                    self.runner, self.host(machine), "systemctl poweroff", check=False, timeout=10
                )
            if wait_until(lambda: not localhost.pid_alive(pid), POWEROFF_TIMEOUT, interval=0.5):
                return
        _signal_group(pid, signal.SIGTERM)
        if not wait_until(lambda: not localhost.pid_alive(pid), KILL_GRACE, interval=0.2):
            _signal_group(pid, signal.SIGKILL)
            wait_until(lambda: not localhost.pid_alive(pid), KILL_GRACE, interval=0.2)

    def _remove_files(self, machine: Machine) -> None:
        """The overlay and the metadata go; the console log stays, for a look after the fact, and
        so does what the machine shipped (its `logs` folder is outside its directory)."""
        directory = machine.path
        for name in ("disk.qcow2", "metadata.json"):
            (directory / name).unlink(missing_ok=True)
        logs = self.directory / "terminated"
        if (directory / "console.log").is_file():
            logs.mkdir(parents=True, exist_ok=True)
            shutil.move(directory / "console.log", logs / f"{machine.instance_id}.console.log")
        shutil.rmtree(directory, ignore_errors=True)


def read_records(state: StateDir) -> list[Machine]:
    """The machines recorded in the state directory, alive or not."""
    try:
        raw = json.loads((state.local / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = {item.name for item in fields(Machine)}
    return [
        Machine(**{key: value for key, value in entry.items() if key in names})
        for entry in raw
        if isinstance(entry, dict) and "instance_id" in entry and "directory" in entry
    ]


def memory_of(machines: Iterable[Machine], settings: LocalSettings) -> int:
    """What these machines hold of the host's memory now (MiB), counting only live ones."""
    return sum(
        settings.machine_memory + QEMU_OVERHEAD
        for machine in machines
        if _is_qemu_of(machine.pid, machine.instance_id)
    )
