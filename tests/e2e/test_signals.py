"""A run stopped while its verification machine boots, on the local target: SIGTERM stops the QEMU
machine with the run; SIGKILL leaves it running, and `bake recover` stops it, removes its scratch
directory and marks the run abandoned.

Each test boots a machine from the session's build of `base` (reused when the pipeline tests
baked it) and stops the run as soon as its machine is recorded, long before SSH answers.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from bake.history import History, RunRecord
from bake.polling import wait_until
from tests.e2e.project import Project

pytestmark = pytest.mark.vm

# Starting bake, the prepare stage and the disk's overlay take seconds; a loaded host, more.
MACHINE_STARTS_WITHIN = 180


@pytest.fixture(scope="module")
def history(project: Project) -> History:
    project.ok("build", "base")
    return History(project.state / "history.sqlite")


@pytest.fixture
def verifying(project: Project, history: History) -> Iterator[subprocess.Popen[str]]:
    """`bake verify base --again` in the background; killed at the end if a test left it."""
    process = project.start("verify", "base", "--again")
    yield process
    process.kill()
    process.communicate()


def qemu_processes_of(run_id: str) -> list[int]:
    """Every live QEMU process whose command line names the run (its overlay, its console log)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in command and run_id.encode() in command:
            found.append(int(proc.name))
    return found


def running(pid: int) -> bool:
    """Whether `pid` runs; a zombie waiting for init to reap it has stopped."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] != "Z"


def machine_of(history: History, process: subprocess.Popen[str]) -> tuple[RunRecord, int]:
    """The verify run of `process` and the pid of its QEMU machine, once it is recorded and runs."""

    def recorded() -> tuple[RunRecord, int] | None:
        run = next((run for run in history.runs(5) if run.command == "verify"), None)
        if run is None or run.status not in ("running", "interrupted"):
            return None
        pids = [int(r.id) for r in run.resources if r.kind == "qemu-machine"]
        return (run, pids[0]) if pids and pids[0] in qemu_processes_of(run.run_id) else None

    found: tuple[RunRecord, int] | None = None

    def started_or_ended() -> bool:
        nonlocal found
        found = recorded()
        return found is not None or process.poll() is not None

    wait_until(started_or_ended, MACHINE_STARTS_WITHIN, 0.2)
    if found is None or process.poll() is not None:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"no QEMU machine of bake verify ran within {MACHINE_STARTS_WITHIN}s:\n{err}")
    return found


def scratch_of(project: Project, run_id: str) -> Path:
    return project.state / "work" / f"verify-base-{run_id}"


def test_sigterm_while_the_machine_boots_stops_it_and_cancels_the_run(
    project: Project, history: History, verifying: subprocess.Popen[str]
) -> None:
    run, pid = machine_of(history, verifying)
    assert scratch_of(project, run.run_id).is_dir()

    verifying.send_signal(signal.SIGTERM)
    _, err = verifying.communicate(timeout=120)

    assert verifying.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "error: cancelled by SIGTERM; the running stage was undone"
    )
    (after,) = [found for found in history.runs(5) if found.run_id == run.run_id]
    assert (after.status, after.error) == ("cancelled", "cancelled by SIGTERM")
    assert [(stage.name, stage.status) for stage in after.stages] == [
        ("prepare", "succeeded"),
        ("verify", "cancelled"),
    ]
    assert not running(pid)
    assert qemu_processes_of(run.run_id) == []
    assert not scratch_of(project, run.run_id).exists()


def test_recover_stops_the_machine_a_killed_run_left_and_marks_it_abandoned(
    project: Project, history: History, verifying: subprocess.Popen[str]
) -> None:
    run, pid = machine_of(history, verifying)
    scratch = scratch_of(project, run.run_id)
    try:
        verifying.kill()
        verifying.communicate(timeout=60)
        assert running(pid), "QEMU died with bake: there is nothing left to recover"

        would = project.ok("--json", "recover", "--dry-run").json
        assert would["runs"] == [run.run_id]
        assert {(a["kind"], a["id"], a["outcome"]) for a in would["released"]} == {
            ("qemu-machine", str(pid), "would be released"),
            ("scratch", str(scratch), "would be released"),
        }
        assert running(pid) and scratch.is_dir(), "a dry run released something"
        (still,) = [found for found in history.runs(5) if found.run_id == run.run_id]
        assert still.status == "interrupted"

        recovered = project.ok("--json", "recover").json
        assert recovered["runs"] == [run.run_id]
        assert {(a["kind"], a["id"], a["outcome"]) for a in recovered["released"]} == {
            ("qemu-machine", str(pid), "released"),
            ("scratch", str(scratch), "released"),
        }
        assert recovered["left"] == []
        assert not running(pid)
        assert qemu_processes_of(run.run_id) == []
        assert not scratch.exists()
        (after,) = [found for found in history.runs(5) if found.run_id == run.run_id]
        assert after.status == "abandoned"
        assert [(stage.name, stage.status) for stage in after.stages] == [
            ("prepare", "succeeded"),
            ("verify", "abandoned"),
        ]

        again = project.ok("--json", "recover").json
        assert (again["runs"], again["released"], again["left"]) == ([], [], [])
    finally:
        for leftover in qemu_processes_of(run.run_id):
            with suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
