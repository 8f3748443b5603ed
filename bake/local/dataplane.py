"""Starting, stopping and reading the local data plane from a command.

The supervisor (`bake/local/supervisor.py`) runs in its own process, like the moto server; this
module starts it (after checking that the host has the memory its machines need), has it follow a
config whose services changed (in place, through SIGHUP: the other services' frontends keep
answering), restarts it when the machine settings or the cloud changed, stops it with its
machines, and reads what it last reported for `bake local status`.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bake import localhost
from bake.config import COLORS, Config
from bake.errors import BakeError, InputError
from bake.local import machines
from bake.local.machines import QEMU_OVERHEAD
from bake.local.supervisor import MODULE, RECORD_NAME, STATUS_NAME, write_json
from bake.polling import wait_until
from bake.runner import Runner
from bake.state import StateDir

MEMINFO = Path("/proc/meminfo")
START_TIMEOUT = 30.0
FOLLOW_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# A build or verification machine runs beside the service machines: its memory, and TCG's cache.
BUILD_OVERHEAD = 1024


@dataclass(frozen=True)
class MemoryNeed:
    """What the configured services' machines take of the host (MiB), and how it adds up."""

    machines: int
    per_machine: int
    build: int

    @property
    def total(self) -> int:
        return self.machines * self.per_machine + self.build


def memory_need(config: Config) -> MemoryNeed:
    """Both colours of every service at their desired capacity, and one build machine."""
    count = sum(len(COLORS) * service.capacity.desired for service in config.services.values())
    per_machine = config.local.machine_memory + QEMU_OVERHEAD
    return MemoryNeed(count, per_machine, config.local.memory + BUILD_OVERHEAD)


def available_memory(meminfo: Path = MEMINFO) -> int:
    """MemAvailable of this host, in MiB."""
    for line in meminfo.read_text(encoding="utf-8").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise BakeError(f"{meminfo} does not say how much memory is available")


def check_memory(config: Config, state: StateDir, meminfo: Path = MEMINFO) -> None:
    """Refuse (exit 2, nothing started) when the machines would not fit in this host's memory.

    Machines of this state directory that already run are part of the need and of what is free.
    """
    need = memory_need(config)
    held = machines.memory_of(machines.read_records(state), config.local)
    available = available_memory(meminfo) + held
    if need.total <= available:
        return
    per_service = ", ".join(
        f"{service.name}: {len(COLORS)} colours x {service.capacity.desired}"
        for service in config.services.values()
    )
    raise InputError(
        f"the local machines need {need.total} MiB ({need.machines} machines x "
        f"{need.per_machine} MiB ({per_service}), plus {need.build} MiB for a build or "
        f"verification machine) but this host has {available} MiB available",
        hint="lower [local] machine_memory or the services' capacity, free memory, or set "
        "[local] machines = false to run the local cloud without machines",
    )


def _plan(config: Config) -> dict[str, Any]:
    """What the supervisor runs for: the services' names and switches, and the machines'
    settings (not rollout settings such as capacity or soak, which it reads from the cloud)."""
    services = [
        {
            "name": service.name,
            "load_balancer": service.load_balancer,
            "listener_port": service.listener_port,
            "listener_rule": service.listener_rule,
            "colors": {color: service.names(color).model_dump() for color in COLORS},
        }
        for service in config.services.values()
    ]
    settings = config.local
    machine = {
        "memory": settings.machine_memory,
        "cpus": settings.machine_cpus,
        "accelerator": settings.accelerator,
        "region": settings.region,
    }
    return {"services": services, "machine": machine}


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan_digest(config: Config) -> str:
    """What the supervisor was started or last reconfigured for. A command whose config
    differs here has it follow that config."""
    return _digest(_plan(config))


def machine_digest(config: Config) -> str:
    """The machines' settings: a command whose config differs here restarts the supervisor."""
    return _digest(_plan(config)["machine"])


def _status_path(state: StateDir) -> Path:
    return state.local / STATUS_NAME


def _record_path(state: StateDir) -> Path:
    return state.local / RECORD_NAME


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_supervisor(pid: int | None, state: StateDir) -> bool:
    return localhost.runs(pid, MODULE, str(state.root))


def running(state: StateDir) -> dict[str, Any] | None:
    """The live supervisor's record (pid, endpoint, plan digest), or None."""
    record = _read(_record_path(state))
    return record if _is_supervisor(record.get("pid"), state) else None


def up(
    runner: Runner,
    state: StateDir,
    config: Config,
    endpoint: str,
    console_line: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Start the supervisor for this config and cloud, keep the one that runs for them, or have
    it follow this config when only the services changed."""
    digest = plan_digest(config)
    current = running(state)
    if current and current.get("digest") == digest and current.get("endpoint") == endpoint:
        return current
    check_memory(config, state)
    if (
        current
        and current.get("endpoint") == endpoint
        and current.get("machine") == machine_digest(config)
    ):
        followed = _follow(state, config, current)
        if followed is not None:
            _say_services(state, console_line)
            return followed
        console_line("    local data plane: the supervisor did not follow the config; restarting")
    elif current:
        console_line("    local data plane: restarting for changed machine settings or cloud")
    if current:
        stop_supervisor(state)
    log_path = state.local / "supervisor.log"
    argv = [
        sys.executable, "-m", MODULE, "--state", str(state.root),
        "--config", str(config.path), "--endpoint", endpoint, "--digest", digest,
    ]  # fmt: skip
    _status_path(state).unlink(missing_ok=True)
    process = runner.spawn(argv, log_path=log_path, cwd=config.root)
    record = _record(config, endpoint, process.pid, log_path)
    write_json(_record_path(state), record)
    started = wait_until(
        lambda: process.poll() is not None or _read(_status_path(state)).get("running"),
        START_TIMEOUT,
        interval=0.2,
    )
    if not started or process.poll() is not None:
        process.stop()
        raise BakeError(
            f"the local data plane did not start within {START_TIMEOUT:.0f}s",
            hint=f"see {log_path}",
        )
    _say_services(state, console_line)
    return record


def _record(config: Config, endpoint: str, pid: int, log_path: Path) -> dict[str, Any]:
    return {
        "pid": pid,
        "digest": plan_digest(config),
        "machine": machine_digest(config),
        "endpoint": endpoint,
        "config": str(config.path),
        "log": str(log_path),
    }


def _follow(state: StateDir, config: Config, current: dict[str, Any]) -> dict[str, Any] | None:
    """Have the running supervisor follow `config` (its record names it, then SIGHUP) and wait
    until it reports that it does; None if it does not within FOLLOW_TIMEOUT."""
    pid = int(current["pid"])
    record = _record(config, current["endpoint"], pid, Path(current.get("log", "")))
    write_json(_record_path(state), record)
    with_signal(pid, signal.SIGHUP)
    followed = wait_until(
        lambda: (
            _read(_status_path(state)).get("digest") == record["digest"]
            or not localhost.pid_alive(pid)
        ),
        FOLLOW_TIMEOUT,
        interval=0.2,
    )
    if not followed or _read(_status_path(state)).get("digest") != record["digest"]:
        return None
    return record


def _say_services(state: StateDir, console_line: Callable[[str], None]) -> None:
    services = _read(_status_path(state)).get("services", {})
    for name, service in services.items():
        console_line(f"    local data plane: {name} at {service['url']}")


def stop_supervisor(state: StateDir) -> bool:
    """Stop the supervisor and its HAProxy; its machines keep running. True if it ran."""
    record = running(state)
    if record is None:
        return False
    pid = int(record["pid"])
    with_signal(pid, signal.SIGTERM)
    if not wait_until(lambda: not localhost.pid_alive(pid), STOP_TIMEOUT, interval=0.2):
        with_signal(pid, signal.SIGKILL)
        wait_until(lambda: not localhost.pid_alive(pid), STOP_TIMEOUT, interval=0.2)
    return True


def with_signal(pid: int, sig: int) -> None:
    import contextlib
    import os

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def down(runner: Runner, state: StateDir, config: Config) -> bool:
    """Stop the supervisor, its HAProxy and every machine; True if anything was running."""
    from bake import ssh
    from bake.history import History
    from bake.local.store import ImageStore

    stopped = stop_supervisor(state)
    key, _ = ssh.ensure_keypair(runner, state.ssh)
    fleet = machines.Fleet(
        runner,
        state,
        config.local,
        ImageStore(state.store, History(state.history_db)),
        accelerator="tcg",
        key=key,
        region=config.local.region,
    )
    fleet.load()
    stopped = stopped or bool(fleet.machines)
    fleet.stop_all()
    if stopped:
        from bake.local import haproxy

        haproxy.HAProxy(runner, state.local / "haproxy").stop_stale()
    _status_path(state).unlink(missing_ok=True)
    return stopped


def status(state: StateDir) -> dict[str, Any]:
    """The data plane as the supervisor last reported it: `services` (each with its `url`) and
    `machines`; `running` says whether the supervisor is alive."""
    report = _read(_status_path(state))
    alive = running(state) is not None
    return {
        "running": alive and bool(report.get("running")),
        "services": report.get("services", {}) if alive else {},
        "machines": report.get("machines", [])
        if alive
        else [machine.to_dict() for machine in machines.read_records(state)],
        "log": str(state.local / "supervisor.log"),
    }
