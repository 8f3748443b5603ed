"""The local target's cloud: a moto server on 127.0.0.1 that outlives the `bake` command.

`up` starts it (or finds the one already running), `down` stops it, `status` reports it. Its
address and pid live in `cloud.json` in the state directory's local folder, its output in
`moto.log` next to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bake.aws.session import Cloud
from bake.errors import BakeError
from bake.local import motoserver
from bake.localhost import free_port, pid_alive
from bake.polling import wait_until
from bake.runner import Runner
from bake.state import StateDir

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_GRACE = 5.0
# moto's server with the data plane's target health (bake/local/motoserver.py).
MOTO_MODULE = "bake.local.motoserver"


@dataclass(frozen=True)
class LocalCloud:
    """A running moto server and the region the toolkit uses on it."""

    endpoint: str
    pid: int
    port: int
    region: str
    started: str

    def cloud(self) -> Cloud:
        return Cloud(self.region, endpoint_url=self.endpoint)


def _record(state: StateDir) -> Path:
    return state.local / "cloud.json"


def _log(state: StateDir) -> Path:
    return state.local / "moto.log"


def health_file(state: StateDir) -> Path:
    """Where the data plane reports target health for the moto server to answer with."""
    return state.local / "health.json"


def _read(state: StateDir) -> LocalCloud | None:
    try:
        return LocalCloud(**json.loads(_record(state).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _answers(endpoint: str, timeout: float = 1.0) -> bool:
    """Whether an HTTP server answers at `endpoint` (any status will do)."""
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def _is_moto(pid: int) -> bool:
    """Whether `pid` runs a moto server, so a reused pid is never signalled (Linux /proc only)."""
    try:
        return MOTO_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False


def _running(state: StateDir) -> LocalCloud | None:
    """The recorded server, if its process is alive and it answers (a busy one gets 5 s)."""
    recorded = _read(state)
    if not (recorded and pid_alive(recorded.pid) and _is_moto(recorded.pid)):
        return None
    return recorded if _answers(recorded.endpoint, timeout=5.0) else None


def up(runner: Runner, state: StateDir, region: str, port: int = 0) -> LocalCloud:
    """Start the local cloud, or return the one already running."""
    running = _running(state)
    if running:
        return replace(running, region=region)
    down(state)  # a recorded server that no longer answers is stopped, not left behind
    state.local.mkdir(parents=True, exist_ok=True)
    port = port or free_port(HOST)
    endpoint = f"http://{HOST}:{port}"
    if _answers(endpoint):
        raise BakeError(
            f"cannot start the local cloud: something already answers on {endpoint}",
            hint="stop it, or set [local] port to another port (0 picks a free one)",
        )
    process = runner.spawn(
        [sys.executable, "-m", MOTO_MODULE, "-H", HOST, "-p", str(port)],
        log_path=_log(state),
        env={motoserver.HEALTH_ENV: str(health_file(state))},
    )
    started = wait_until(
        lambda: process.poll() is not None or _answers(endpoint), START_TIMEOUT, interval=0.2
    )
    if not started or process.poll() is not None:
        process.stop(grace=STOP_GRACE)
        raise BakeError(
            f"the local cloud (moto server) did not answer on {endpoint} "
            f"within {START_TIMEOUT:.0f}s",
            hint=f"see {_log(state)}",
        )
    cloud = LocalCloud(
        endpoint, process.pid, port, region, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    _record(state).write_text(json.dumps(asdict(cloud), indent=2) + "\n", encoding="utf-8")
    return cloud


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def down(state: StateDir) -> bool:
    """Stop the local cloud (SIGTERM, then SIGKILL after a grace period); True if it was running."""
    recorded = _read(state)
    stopped = False
    if recorded and pid_alive(recorded.pid) and _is_moto(recorded.pid):
        _signal(recorded.pid, signal.SIGTERM)
        if not wait_until(lambda: not pid_alive(recorded.pid), STOP_GRACE, interval=0.1):
            _signal(recorded.pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(recorded.pid), STOP_GRACE, interval=0.1)
        stopped = True
    _record(state).unlink(missing_ok=True)
    return stopped


def status(state: StateDir) -> dict[str, Any]:
    """Whether the local cloud runs, and where; never raises for "not running"."""
    recorded = _read(state)
    running = _running(state)
    return {
        "running": running is not None,
        "endpoint": running.endpoint if running else None,
        "region": recorded.region if recorded else None,
        "pid": running.pid if running else None,
        "port": running.port if running else None,
        "started": running.started if running else None,
        "log": str(_log(state)),
    }
