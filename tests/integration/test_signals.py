"""A stop signal ends a run as Ctrl-C does: SIGTERM (a cancelled CI job) or SIGHUP (a closed
terminal) stops the running stage, gives Packer its grace period to clean up, records the run
cancelled, and exits 128 + the signal's number."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bake.history import History
from bake.polling import wait_until
from tests.integration.aws_project import REPO, write_config

# Answers `packer version` and `validate`; a `build` marks that it started, then runs until told to
# stop, and on SIGTERM takes a second to "clean up" before it exits, as Packer does.
FAKE_PACKER = """#!/bin/sh
case "$1" in
  version) echo "Packer v1.6.6" ;;
  build)
    trap 'sleep 1; echo cleaned > "$BAKE_TEST_MARK.cleaned"; exit 1' TERM
    echo started > "$BAKE_TEST_MARK.started"
    while :; do sleep 0.1; done ;;
  *) exit 0 ;;
esac
"""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_cancels_the_build_and_lets_packer_clean_up(
    tmp_path: Path, moto_endpoint: str, source_ami: str, stop: signal.Signals
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "packer").write_text(FAKE_PACKER)
    (bin_dir / "packer").chmod(0o755)
    mark = tmp_path / "packer"
    config = write_config(tmp_path, moto_endpoint)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "BAKE_TEST_MARK": str(mark),
        "BAKE_STATE_DIR": str(tmp_path / "state"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bake", "--config", str(config), "build", "base"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(
            lambda: mark.with_suffix(".started").exists() or process.poll() is not None, 60, 0.1
        )
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == 128 + stop
    assert err.strip().splitlines()[-1] == (
        f"error: cancelled by {stop.name}; the running stage was undone"
    )
    assert mark.with_suffix(".cleaned").read_text() == "cleaned\n", "packer had no time to clean up"
    (run,) = History(tmp_path / "state" / "history.sqlite").runs()
    assert (run.command, run.status, run.error) == (
        "build",
        "cancelled",
        f"cancelled by {stop.name}",
    )
    assert [(stage.name, stage.status) for stage in run.stages][-1] == ("build", "cancelled")
