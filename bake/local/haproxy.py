"""The local target's load balancer: an HAProxy that mirrors an Application Load Balancer.

Two levels, as an ALB has: a service's frontend (127.0.0.1:PORT, the service's URL) forwards to
`svc-<service>`, whose servers are the service's target groups, weighted as the listener's forward
action weighs them; each points over an abstract socket at the target group's own frontend, whose
backend `tg-<target group>` balances over the instances (servers named by instance id) and checks
them as the target group says. The supervisor calls `HAProxy.apply()` about once a second: servers
and weights change through the runtime API; a changed static part (a frontend, a backend, a health
check) rewrites the config and reloads HAProxy seamlessly, in master-worker mode. The desired
state and the config it renders to are `bake.local.haproxy_config`.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bake.errors import BakeError
from bake.local.haproxy_config import (
    HOST,
    SHORT_ROOT,
    Backend,
    Desired,
    Server,
    _abns,
    _ensure_private,
    _private,
    render,
    socket_directory,
)
from bake.localhost import pid_alive, runs
from bake.polling import wait_until
from bake.runner import Process, Runner

HAPROXY = "haproxy"
# Debian installs haproxy in /usr/sbin, which is not on other users' PATH.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
START_TIMEOUT = 5.0
RELOAD_TIMEOUT = 5.0
STOP_GRACE = 5.0
SOCKET_TIMEOUT = 5.0
_TIMEOUT_CHECKS = {"L4TOUT", "L6TOUT", "L7TOUT"}


@dataclass(frozen=True)
class ServerStat:
    """One server row of `show stat`, under HAProxy's proxy name."""

    proxy: str
    server: str
    status: str
    check_status: str
    check_code: str
    check_description: str
    sessions: int
    address: str
    weight: int


def parse_stat(text: str) -> list[ServerStat]:
    """The server rows of `show stat` CSV (its header line starts with "# pxname,svname,")."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# pxname,"):
        raise BakeError(f"HAProxy answered `show stat` with {text[:200]!r}")
    rows = csv.DictReader([lines[0][2:], *lines[1:]])
    return [
        ServerStat(
            proxy=row["pxname"],
            server=row["svname"],
            status=row["status"],
            check_status=row.get("check_status", "").removeprefix("* "),
            check_code=row.get("check_code", ""),
            check_description=row.get("last_chk") or row.get("check_desc") or "",
            sessions=int(row.get("scur") or 0),
            address=row.get("addr", ""),
            weight=int(row.get("uweight") or row.get("weight") or 0),
        )
        for row in rows
        if row["svname"] not in ("FRONTEND", "BACKEND")
    ]


@dataclass(frozen=True)
class ServerHealth:
    """An instance's state in its target group as HAProxy's checks see it."""

    backend: str
    server: str
    status: str
    check_status: str
    check_code: str
    check_description: str
    sessions: int

    @property
    def up(self) -> bool:
        """HAProxy sends it traffic: UP, UP going down (AWS keeps it healthy until the unhealthy
        threshold) or not checked."""
        return self.status.split(" ")[0] == "UP" or self.status == "no check"

    def describe(self) -> str:
        check = " ".join(p for p in (self.check_status, self.check_code) if p)
        detail = f" ({self.check_description})" if self.check_description else ""
        return f"HAProxy: {self.status}, last check {check or 'none'}{detail}"

    def target_health(self, *, ever_up: bool) -> dict[str, str]:
        """AWS's TargetHealth for it; `ever_up` says whether it was ever healthy (else initial)."""
        state = self.status.split(" ")[0]
        if state in ("DRAIN", "MAINT", "NOLB"):
            return self._answer("draining", "Target.DeregistrationInProgress")
        if self.status == "no check":
            return self._answer("unavailable", "Target.HealthCheckDisabled")
        if self.up:
            return {"State": "healthy"}
        if not ever_up:
            return self._answer("initial", "Elb.InitialHealthChecking")
        if self.check_status == "L7STS":
            return self._answer("unhealthy", "Target.ResponseCodeMismatch")
        if self.check_status in _TIMEOUT_CHECKS:
            return self._answer("unhealthy", "Target.Timeout")
        return self._answer("unhealthy", "Target.FailedHealthChecks")

    def _answer(self, state: str, reason: str) -> dict[str, str]:
        return {"State": state, "Reason": reason, "Description": self.describe()}


@dataclass(frozen=True)
class Command:
    """A runtime API command line and the reply that means it worked."""

    line: str
    expect: str = ""


def _add(backend: Backend, server: Server) -> Command:
    """Add a server DOWN: `enable server` alone makes it UP before any check ("UP -1/3 INI")."""
    name = f"tg-{backend.name}/{server.name}"
    steps = [f"add server {name} {server.endpoint} {backend.health.server_options()}"]
    steps += _enable(backend, name)
    return Command("; ".join(steps), "New server registered.")


def _enable(backend: Backend, name: str) -> list[str]:
    if not backend.health.enabled:
        return [f"enable server {name}"]
    return [f"enable server {name}", f"enable health {name}", f"set server {name} health down"]


def _delete(proxy: str, server: str) -> Command:
    name = f"{proxy}/{server}"
    return Command(
        f"set server {name} state maint; shutdown sessions server {name}; del server {name}",
        "Server deleted.",
    )


@dataclass(frozen=True)
class Plan:
    """The runtime commands that bring HAProxy to a desired state, and the drains they leave."""

    commands: list[Command]
    draining_since: dict[tuple[str, str], float]


def plan(
    desired: Desired,
    running: list[ServerStat],
    draining_since: dict[tuple[str, str], float],
    now: float,
    drain_timeout: float,
) -> Plan:
    """Weights, added servers, drains begun and finished (keys are (target group, instance id))."""
    rows = {(row.proxy, row.server): row for row in running}
    commands = [
        Command(f"set weight svc-{frontend.name}/{name} {weight}")
        for frontend in desired.frontends
        for name, weight in frontend.haproxy_weights().items()
        if (row := rows.get((f"svc-{frontend.name}", name))) and row.weight != weight
    ]
    draining = dict(draining_since)
    wanted = {backend.name: backend for backend in desired.backends}
    for backend in desired.backends:
        proxy = f"tg-{backend.name}"
        for server in backend.servers:
            row, key = rows.get((proxy, server.name)), (backend.name, server.name)
            if row is not None and row.address != server.endpoint:
                commands.append(_delete(proxy, server.name))  # its machine came back elsewhere
                row = None
            if row is None:
                commands.append(_add(backend, server))
            elif key in draining or row.status.startswith("DRAIN"):  # wanted back
                draining.pop(key, None)
                commands.append(Command(f"set server {proxy}/{server.name} state ready"))
            elif row.status.startswith("MAINT"):  # added, but a lost connection left it there
                commands.append(Command("; ".join(_enable(backend, f"{proxy}/{server.name}"))))
    for row in running:
        name = row.proxy.removeprefix("tg-")
        key = (name, row.server)
        if not row.proxy.startswith("tg-") or name not in wanted:
            continue
        if any(server.name == row.server for server in wanted[name].servers):
            continue
        if row.status.startswith("MAINT"):  # a deletion that did not finish: no traffic anyway
            draining.pop(key, None)
            commands.append(_delete(row.proxy, row.server))
        elif key not in draining:
            draining[key] = now
            commands.append(Command(f"set server {row.proxy}/{row.server} state drain"))
        elif row.sessions == 0 or now - draining[key] >= drain_timeout:
            del draining[key]
            commands.append(_delete(row.proxy, row.server))
    draining = {key: since for key, since in draining.items() if key[0] in wanted}
    return Plan(commands, draining)


class AdminClient(Protocol):
    """Sends one command line to HAProxy's admin socket and returns the whole reply."""

    def send(self, line: str) -> str: ...


class UnixSocketClient:
    """The admin (stats) socket's client: one connection per command line, read to its end."""

    def __init__(self, path: Path, timeout: float = SOCKET_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def send(self, line: str) -> str:
        chunks = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(self.timeout)
                conn.connect(str(self.path))
                conn.sendall(line.encode() + b"\n")
                conn.shutdown(socket.SHUT_WR)
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise BakeError(f"HAProxy's socket {self.path} did not answer {line!r}: {exc}") from exc
        return b"".join(chunks).decode(errors="replace")


class HAProxy:
    """The HAProxy of a state directory: started, brought to a desired state, read, stopped."""

    def __init__(
        self,
        runner: Runner,
        directory: Path,
        *,
        drain_timeout: float = 30.0,
        client: AdminClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        send_signal: Callable[[int, int], None] = os.kill,
        short_root: Path = SHORT_ROOT,
    ) -> None:
        self.runner = runner
        self.directory = directory
        self.drain_timeout = drain_timeout
        self.clock = clock
        self.sockets = socket_directory(directory, short_root)
        self.config = directory.absolute() / "haproxy.cfg"
        self.log_path = directory / "haproxy.log"
        self.client = client or UnixSocketClient(self.sockets / "admin.sock")
        self._send_signal = send_signal
        self._process: Process | None = None
        self._static: tuple[Any, ...] | None = None
        self._draining: dict[tuple[str, str], float] = {}

    @property
    def pid(self) -> int | None:
        """The master process's pid while it runs."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def start(self, desired: Desired) -> None:
        """Start HAProxy (stopping one this directory left behind) with `desired`'s frontends
        and backends, then add its servers as apply() does, so each starts DOWN until checked."""
        self.stop()
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.sockets != self.directory.absolute():
            _ensure_private(self.sockets)
        (self.directory / "servers.state").write_text("", "utf-8")
        self._check_free(desired)
        bare = desired.with_servers({})
        self._write_config(bare)
        # -W: a master that re-executes itself on SIGUSR2 and hands the listening sockets to the
        # new worker (it passes -x sockpair@N itself), so a reload refuses no connection.
        argv = [HAPROXY, "-W", "-f", str(self.config)]
        self._process = process = self.runner.spawn(argv, log_path=self.log_path, env=_with_sbin())
        started = wait_until(
            lambda: process.poll() is not None or self._worker() is not None,
            START_TIMEOUT,
            interval=0.05,
        )
        if not started or process.poll() is not None:
            self.stop()
            raise BakeError(
                f"HAProxy did not start within {START_TIMEOUT:.0f}s", hint=f"see {self.log_path}"
            )
        self._static = bare.static()
        self._draining = {}
        self.apply(desired)

    def apply(self, desired: Desired) -> None:
        """Bring HAProxy to `desired` through the runtime API, reloading only when the static
        part changed. Removed servers drain first; a later apply() deletes them (draining())."""
        if self.pid is None or self._static is None:
            self.start(desired)  # never started, or it died: start it again
            return
        running = self._stats()
        if desired.static() != self._static:
            self._reload(desired, running)
            running = self._stats()
        result = plan(desired, running, self._draining, self.clock(), self.drain_timeout)
        self._draining = result.draining_since
        for command in result.commands:
            reply = self.client.send(command.line).strip()
            if reply != command.expect:
                raise BakeError(f"HAProxy refused {command.line!r}: {reply or 'no answer'}")

    def health(self) -> dict[tuple[str, str], ServerHealth]:
        """(target group, instance id) -> what HAProxy's checks say of it."""
        health = {}
        for row in self._stats():
            if row.proxy.startswith("tg-"):
                name = row.proxy.removeprefix("tg-")
                health[(name, row.server)] = ServerHealth(
                    name,
                    row.server,
                    row.status,
                    row.check_status,
                    row.check_code,
                    row.check_description,
                    row.sessions,
                )
        return health

    def draining(self) -> set[tuple[str, str]]:
        """(target group, instance id) of removed servers still finishing their requests."""
        return set(self._draining)

    def stop(self) -> None:
        """Stop HAProxy, its master and every worker."""
        if self._process is not None:
            self._process.stop(grace=STOP_GRACE)
            self._process = None
        self.stop_stale()
        if self.sockets != self.directory.absolute() and _private(self.sockets):
            (self.sockets / "admin.sock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.sockets.rmdir()
        self._static = None
        self._draining = {}

    def stop_stale(self) -> None:
        """Stop an HAProxy of this directory that its pid file names and that still runs (a
        killed supervisor leaves it holding the ports); a reused pid is left alone."""
        pidfile = self.directory / "haproxy.pid"
        try:
            pid = int(pidfile.read_text("utf-8").split()[0])
        except (OSError, ValueError, IndexError):
            return
        if runs(pid, HAPROXY, str(self.config)):
            _terminate(pid)
        pidfile.unlink(missing_ok=True)

    def _stats(self) -> list[ServerStat]:
        return parse_stat(self.client.send("show stat -1 4 -1"))

    def _worker(self) -> int | None:
        """The pid of the worker that answers the admin socket, None while none does."""
        try:
            match = re.search(r"^Pid: (\d+)$", self.client.send("show info"), re.MULTILINE)
        except BakeError:
            return None
        return int(match[1]) if match else None

    def _write_config(self, desired: Desired) -> None:
        """Validate the config with `haproxy -c` and only then put it in place."""
        candidate = self.config.with_suffix(".cfg.new")
        candidate.write_text(render(desired, self.directory, sockets=self.sockets), "utf-8")
        checked = self.runner.run(
            [HAPROXY, "-c", "-f", str(candidate)], check=False, env=_with_sbin()
        )
        if not checked.ok:
            output = (checked.stderr + checked.stdout).splitlines()
            alerts = [line for line in output if "[ALERT]" in line] or output
            raise BakeError(f"HAProxy rejects its new config {candidate}: " + " ".join(alerts))
        os.replace(candidate, self.config)

    def _check_free(self, desired: Desired) -> None:
        """Refuse addresses the running config does not hold and something else does: in 2.6 a
        reload that cannot bind stops the old worker too (its abstract sockets cannot pause)."""
        held_ports, held_groups = set(), set()
        if self._static is not None:
            held_ports = {port for _, port, _ in self._static[0]}
            held_groups = {name for name, _ in self._static[1]}
        taken = [
            f"127.0.0.1:{f.port} (service {f.name})"
            for f in desired.frontends
            if f.port not in held_ports and not _bindable(socket.AF_INET, (HOST, f.port))
        ]
        taken += [
            _abns(self.directory, b.name)
            for b in desired.backends
            if b.name not in held_groups
            and not _bindable(socket.AF_UNIX, _abns_address(self.directory, b.name))
        ]
        if taken:
            raise BakeError(f"HAProxy cannot listen on {', '.join(taken)}: already in use")

    def _reload(self, desired: Desired, running: list[ServerStat]) -> None:
        """Reload with `desired`'s static part and the servers HAProxy runs now, their states
        kept through the server-state file; on failure the old worker keeps running."""
        assert self._process is not None
        wanted = {backend.name for backend in desired.backends}
        servers: dict[str, tuple[Server, ...]] = {}
        for row in running:
            name = row.proxy.removeprefix("tg-")
            if row.proxy.startswith("tg-") and name in wanted:
                address, _, port = row.address.rpartition(":")
                servers[name] = (*servers.get(name, ()), Server(row.server, int(port), address))
        self._check_free(desired)
        previous = self.config.read_text("utf-8")
        self._write_config(desired.with_servers(servers))
        state = self.client.send("show servers state")
        (self.directory / "servers.state").write_text(state, "utf-8")
        old_worker = self._worker()
        log_size = self.log_path.stat().st_size if self.log_path.exists() else 0
        # SIGUSR2, not the master CLI's `reload`: after a failed reload 2.6's master waits
        # without its CLI, and only a signal makes it try again.
        self._send_signal(self._process.pid, signal.SIGUSR2)
        outcome: list[bool] = []  # whether a new worker answers; empty until it does or fails

        def settled() -> bool:
            if b"Loading failure!" in _read_from(self.log_path, log_size):
                outcome.append(False)
            elif self._worker() not in (None, old_worker):
                outcome.append(True)
            return bool(outcome)

        if not (wait_until(settled, RELOAD_TIMEOUT, interval=0.05) and outcome[-1]):
            self.config.write_text(previous, "utf-8")  # what the old worker still runs
            raise BakeError("HAProxy did not load its new config", hint=f"see {self.log_path}")
        self._static = desired.static()
        self._draining = {key: t for key, t in self._draining.items() if key[0] in wanted}


def _with_sbin() -> dict[str, str]:
    """The environment's PATH with the sbin folders added, so HAProxy is found for any user."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return {"PATH": os.pathsep.join([*parts, *(d for d in SBIN if d not in parts)])}


def _abns_address(directory: Path, target_group: str) -> bytes:
    """The abstract address HAProxy binds for abns@NAME: NAME after a NUL, padded with NULs to
    all of sun_path (a shorter address would be another abstract name)."""
    name = _abns(directory, target_group).removeprefix("abns@").encode()
    return (b"\0" + name).ljust(108, b"\0")


def _bindable(family: socket.AddressFamily, address: Any) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if family == socket.AF_INET:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return log.read()
    except OSError:
        return b""


def _terminate(pid: int) -> None:
    """SIGTERM the process group (master and workers), SIGKILL it after STOP_GRACE."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except OSError:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)  # not a group leader: the master stops its workers itself
        if wait_until(lambda: not pid_alive(pid), STOP_GRACE, interval=0.05):
            return
