"""The progress line of a long command: on a terminal redrawn in place and every second; in a log,
a line per step and at most one every `every` seconds while a step says what it is doing."""

from __future__ import annotations

import io
import time

from bake import console as console_module
from bake.console import Console, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_in_a_log_each_step_is_a_line_and_details_come_periodically(monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(console_module.time, "monotonic", clock)
    stream = io.StringIO()
    progress = Progress(Console(stream), "packer build base", every=15)

    progress.update("Provisioning with shell script: patch.sh")
    progress.update(detail="unpacking perl (2 of 25)")  # 0 s after the step's line: too soon
    clock.now += 10
    progress.update(detail="unpacking zlib1g (5 of 25)")  # 10 s: still too soon
    clock.now += 6
    progress.update(detail="configuring apt (6 of 25)")  # 16 s: a line
    progress.update(detail="configuring apt (6 of 25)")  # unchanged: nothing
    clock.now += 20
    progress.update(detail="configuring apt (6 of 25)")  # unchanged, however long: nothing
    progress.update("Provisioning with shell script: harden.sh")  # a new step: at once

    assert lines(stream) == [
        "    - packer build base [0s] Provisioning with shell script: patch.sh",
        "    - packer build base [16s] Provisioning with shell script: patch.sh: "
        "configuring apt (6 of 25)",
        "    - packer build base [36s] Provisioning with shell script: harden.sh",
    ]


def test_a_new_step_clears_the_detail() -> None:
    stream = io.StringIO()
    progress = Progress(Console(stream), "build")
    progress.update("one")
    progress.update(detail="half way")
    progress.update("two")
    assert progress.step == "two" and progress.detail == ""
    assert lines(stream)[-1].endswith("] two")


def test_on_a_terminal_the_line_is_redrawn_and_ticks_while_nothing_is_said() -> None:
    stream = Terminal()
    console = Console(stream)
    with Progress(console, "packer build base") as progress:
        progress.update("Waiting for SSH to become available...")
        progress.update(detail="unpacking perl (2 of 25)")
        drawn = stream.getvalue().count("\r")
        time.sleep(2.3)
        ticked = stream.getvalue().count("\r") - drawn
    console.line("done")

    assert stream.getvalue().count("\n") == 1, "redrawn in place: the only newline is done's"
    assert "unpacking perl (2 of 25)" in stream.getvalue()
    assert ticked >= 2, "the elapsed time moves on without output"
    after = stream.getvalue().count("\r")
    time.sleep(1.2)
    assert stream.getvalue().count("\r") == after, "the ticker stops with the command"
    assert stream.getvalue().endswith("done\n")


def test_a_quiet_console_shows_nothing_and_starts_no_ticker() -> None:
    stream = Terminal()
    with Progress(Console(stream, quiet=True), "build") as progress:
        progress.update("step", "detail")
        assert progress._ticker is None
    assert stream.getvalue() == ""
