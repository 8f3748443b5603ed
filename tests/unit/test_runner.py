"""The one door to the outside world, with real (tiny) subprocesses."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bake.errors import BakeError, CommandFailed
from bake.localhost import pid_alive
from bake.runner import Runner


def test_run_captures_output_and_environment() -> None:
    result = Runner().run(["sh", "-c", 'echo "$GREETING"; echo oops >&2'], env={"GREETING": "hi"})
    assert (result.stdout, result.stderr, result.returncode) == ("hi\n", "oops\n", 0)


def test_a_failing_command_names_its_last_line() -> None:
    with pytest.raises(CommandFailed, match="sh exited with status 3: second") as raised:
        Runner().run(["sh", "-c", "echo first >&2; echo second >&2; exit 3"])
    assert raised.value.returncode == 3
    assert Runner().run(["sh", "-c", "exit 3"], check=False).returncode == 3


def test_a_missing_program_says_so() -> None:
    with pytest.raises(BakeError, match="no-such-program is not installed"):
        Runner().run(["no-such-program"])
    with pytest.raises(BakeError, match="no-such-program is not installed"):
        Runner().stream(["no-such-program"], on_line=print)


def test_a_program_that_may_not_run_says_so(tmp_path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(BakeError, match="not-executable.sh cannot be started: Permission denied"):
        Runner().run([str(script)])


def test_run_timeout() -> None:
    with pytest.raises(BakeError, match="did not finish within 1s"):
        Runner().run(["sleep", "5"], timeout=1)


def test_stream_hands_over_every_line_and_logs_it(tmp_path: Path) -> None:
    seen: list[str] = []
    log = tmp_path / "out.log"
    result = Runner().stream(
        ["sh", "-c", "for i in 1 2 3; do echo line $i; done; echo err >&2"],
        on_line=seen.append,
        log_path=log,
    )
    assert seen == ["line 1", "line 2", "line 3", "err"]
    assert log.read_text() == "line 1\nline 2\nline 3\nerr\n"
    assert result.stdout.splitlines()[-1] == "err"


def test_stream_timeout_stops_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(BakeError, match="did not finish within 1s"):
        Runner().stream(
            ["sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"], on_line=print, timeout=1
        )
    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    for _ in range(50):
        if not pid_alive(child):
            break
        time.sleep(0.1)
    assert not pid_alive(child)


def test_an_exception_in_the_consumer_stops_the_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "sh.pid"

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Runner().stream(["sh", "-c", f"echo $$ > {pid_file}; echo go; sleep 30"], on_line=interrupt)
    assert not pid_alive(int(pid_file.read_text()))


def test_spawned_processes_run_until_stopped(tmp_path: Path) -> None:
    process = Runner().spawn(["sleep", "30"], log_path=tmp_path / "sleep.log")
    assert process.poll() is None and pid_alive(process.pid)
    process.stop(grace=5)
    assert process.poll() is not None
    assert not pid_alive(process.pid)
    assert os.getpgid(os.getpid()) != process.pid, "spawned in a session of its own"
