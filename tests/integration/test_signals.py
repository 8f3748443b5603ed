"""A stop signal ends a run as Ctrl-C does: SIGTERM (a cancelled CI job) or SIGHUP (a closed
terminal) stops the running stage, gives Packer its grace period to clean up, or removes the
verification instance with its key pair and security group, records the run cancelled, and exits
128 + the signal's number."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bake.aws.session import Cloud
from bake.history import History, RunRecord
from bake.polling import wait_until
from tests.integration.aws_project import REPO, make_app, write_config

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


def _bake(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`bake ARGS` as its own process, from this checkout, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "bake", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


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
    process = _bake(env, "--config", str(config), "build", "base")
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


def _verifying(history: History, cloud: Cloud) -> RunRecord | None:
    """The verify run once its instance is recorded and running in the cloud (it then waits for
    SSH on an address moto made up, which never answers)."""
    run = next((run for run in history.runs() if run.command == "verify"), None)
    if run is None or [stage.name for stage in run.stages if stage.status == "running"] != [
        "verify"
    ]:
        return None
    instances = [resource.id for resource in run.resources if resource.kind == "instance"]
    if not instances:
        return None
    (reservation,) = cloud.client("ec2").describe_instances(InstanceIds=instances)["Reservations"]
    return run if reservation["Instances"][0]["State"]["Name"] == "running" else None


@pytest.mark.packer
def test_sigterm_during_verify_on_aws_removes_the_instance_key_pair_and_security_group(
    tmp_path: Path, moto_endpoint: str, cloud: Cloud, source_ami: str
) -> None:
    config = write_config(tmp_path, moto_endpoint)
    make_app(config).run("build", image="base")
    history = History(tmp_path / "state" / "history.sqlite")
    env = {**os.environ, "BAKE_STATE_DIR": str(tmp_path / "state")}
    process = _bake(env, "--config", str(config), "verify", "base")
    try:
        assert wait_until(lambda: _verifying(history, cloud) or process.poll() is not None, 60, 0.1)
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()

    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        "error: cancelled by SIGTERM; the running stage was undone"
    )
    run = history.runs()[0]
    assert (run.command, run.status, run.error) == ("verify", "cancelled", "cancelled by SIGTERM")
    assert [(stage.name, stage.status) for stage in run.stages] == [
        ("prepare", "succeeded"),
        ("verify", "cancelled"),
    ]
    created = {resource.kind: resource.id for resource in run.resources}
    assert sorted(created) == ["instance", "key-pair", "security-group"]
    ec2 = cloud.client("ec2")
    (reservation,) = ec2.describe_instances(InstanceIds=[created["instance"]])["Reservations"]
    assert reservation["Instances"][0]["State"]["Name"] == "terminated"
    key_pairs = [key["KeyName"] for key in ec2.describe_key_pairs()["KeyPairs"]]
    assert created["key-pair"] not in key_pairs
    groups = [group["GroupId"] for group in ec2.describe_security_groups()["SecurityGroups"]]
    assert created["security-group"] not in groups
    assert not list((tmp_path / "state" / "work").glob(f"verify-base-{run.run_id}"))
