"""The swaps of a rollout, at most N at a time: each a `bake swap SERVICE` process of its own, with
its own lock, cloud clients and signal handling, exactly as an operator would run it.

A stop signal or Ctrl-C to the rollout is passed on to every swap still running, and each unwinds
as a cancelled `bake swap` does (its stage undone, traffic left on a healthy colour); the rollout
waits for them before it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bake.campaigns.plan import ServiceDecision
from bake.history import now
from bake.runner import Process

if TYPE_CHECKING:
    from bake.app import App

POLL = 0.5  # seconds between looks at the running swaps
STOP_GRACE = 600.0  # how long a stopped swap may take to undo its stage before it is killed


@dataclass(frozen=True)
class Finished:
    decision: ServiceDecision
    returncode: int
    run_id: str  # the swap's run in history, when it got that far
    error: str  # its one-line error, when it failed
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class _Running:
    decision: ServiceDecision
    process: Process
    log: Path
    since: str


def run_all(
    app: App, decisions: list[ServiceDecision], parallel: int, log_dir: Path | None
) -> Generator[Finished, None, None]:
    """Start the swaps, keep at most `parallel` running, and give each as it finishes."""
    waiting, running = list(decisions), list[_Running]()
    directory = log_dir or app.state.logs
    directory.mkdir(parents=True, exist_ok=True)
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                running.append(_start(app, waiting.pop(0), directory))
            for swap in [swap for swap in running if swap.process.poll() is not None]:
                running.remove(swap)
                yield _finished(app, swap)
            if running:
                time.sleep(POLL)
    except BaseException:
        _stop(running)
        raise


def _start(app: App, decision: ServiceDecision, directory: Path) -> _Running:
    log = directory / f"swap-{decision.name}.log"
    argv = [sys.executable, "-m", "bake", "--config", str(app.config.path), "swap", decision.name]
    app.console.line(f"rollout: swapping {decision.name} ({decision.reason}); log {log}")
    since = now()
    return _Running(decision, app.runner.spawn(argv, log_path=log), log, since)


def _finished(app: App, swap: _Running) -> Finished:
    returncode = swap.process.wait()
    runs = [
        run
        for run in app.history.runs(200)
        if run.command == "swap" and run.subject == swap.decision.name and run.started >= swap.since
    ]
    run_id = runs[-1].run_id if runs else ""
    error = ""
    if returncode != 0:
        lines = swap.log.read_text(encoding="utf-8", errors="replace").splitlines()
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        error = errors[-1] if errors else f"bake swap exited {returncode}; see {swap.log}"
    return Finished(swap.decision, returncode, run_id, error, swap.log)


def _stop(running: list[_Running]) -> None:
    """SIGTERM every running swap at once, then wait for each (killing what outlives the grace)."""
    for swap in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(swap.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for swap in running:
        try:
            swap.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:
            swap.process.stop(grace=5)
