"""A stop signal between creating a resource and recording it waits for the record: nothing is
created that undo, cleanup or `bake recover` cannot find."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bake import runner, signals
from bake.aws import instances
from bake.errors import Cancelled
from bake.localhost import pid_alive


@pytest.fixture
def stop_handler() -> Iterator[None]:
    """The handlers `bake` installs, for this test only."""
    previous = {stop: signal.signal(stop, signals.cancel) for stop in signals.STOP_SIGNALS}
    yield
    for stop, handler in previous.items():
        signal.signal(stop, handler)


@pytest.mark.parametrize("stop", signals.STOP_SIGNALS, ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_inside_held_takes_effect_when_the_block_ends(stop_handler, stop) -> None:
    done = []
    with pytest.raises(Cancelled) as cancelled, signals.held():
        os.kill(os.getpid(), stop)
        done.append("recorded")
    assert done == ["recorded"]
    assert cancelled.value.exit_code == 128 + stop


def test_outside_held_a_stop_signal_cancels_at_once(stop_handler) -> None:
    done = []
    with pytest.raises(Cancelled):
        os.kill(os.getpid(), signal.SIGTERM)
        done.append("went on")
    assert done == []


@pytest.mark.parametrize("call", ["CreateKeyPair", "CreateSecurityGroup", "RunInstances"])
def test_a_sigterm_during_a_create_call_still_records_and_removes_what_it_made(
    stop_handler, cloud, base_ami, tmp_path: Path, call: str
) -> None:
    client = cloud.client("ec2")
    hook = f"before-call.ec2.{call}"

    def stop(**_: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    client.meta.events.register(hook, stop)
    recorded: list[tuple[str, str]] = []
    spec = instances.Throwaway(base_ami, "t3.micro", "10.0.0.0/8", "run-1", "base")
    try:
        record = lambda *resource: recorded.append(resource)  # noqa: E731
        with pytest.raises(Cancelled), instances.throwaway(cloud, spec, tmp_path / "key", record):
            pytest.fail("the machine was never meant to be used")
    finally:
        client.meta.events.unregister(hook, stop)

    made = {"CreateKeyPair": "key-pair", "CreateSecurityGroup": "security-group"}
    kinds = [kind for kind, _ in recorded]
    assert kinds[-1] == made.get(call, "instance")
    pairs = client.describe_key_pairs()["KeyPairs"]
    assert [pair["KeyName"] for pair in pairs] == []
    groups = client.describe_security_groups()["SecurityGroups"]
    assert [group["GroupId"] for group in groups if group["GroupName"] != "default"] == []
    if call == "RunInstances":
        (instance_id,) = [resource for kind, resource in recorded if kind == "instance"]
        (reservation,) = client.describe_instances(InstanceIds=[instance_id])["Reservations"]
        assert reservation["Instances"][0]["State"]["Name"] == "terminated"


class _RecordedPopen(subprocess.Popen):
    """A Popen that remembers its pid and, when told to, receives a stop signal the moment it has
    started."""

    started: list[int] = []
    signal_after_start = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _RecordedPopen.started.append(self.pid)
        if _RecordedPopen.signal_after_start:
            os.kill(os.getpid(), signal.SIGTERM)


class _SignalAfterTimer(threading.Timer):
    """A deadline timer that receives a stop signal the moment it has started."""

    def start(self) -> None:
        super().start()
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("point", ["process started", "deadline started", "first line"])
def test_a_stop_signal_anywhere_in_starting_a_streamed_command_stops_it(
    stop_handler, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    monkeypatch.setattr(_RecordedPopen, "started", [])
    monkeypatch.setattr(_RecordedPopen, "signal_after_start", point == "process started")
    monkeypatch.setattr(runner.subprocess, "Popen", _RecordedPopen)
    if point == "deadline started":
        monkeypatch.setattr(runner.threading, "Timer", _SignalAfterTimer)

    def on_line(line: str) -> None:
        if point == "first line":
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Cancelled):
        runner.Runner().stream(
            ["sh", "-c", "echo go; exec sleep 30"], on_line=on_line, timeout=600, stop_grace=5
        )
    (pid,) = _RecordedPopen.started
    assert not pid_alive(pid), "the command outlived the stop signal"
    deadlines = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    assert not [t for t in deadlines if not t.finished.is_set()], "a deadline outlived the command"
