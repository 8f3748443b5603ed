"""What a run tells the person watching it: stage lines on stderr, one-line progress for long steps.

stdout is kept for results (`--json`); everything here goes to stderr.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Console:
    """Prints progress to a stream; redraws a status line in place when it is a terminal."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interactive = self.stream.isatty()
        self._status_width = 0

    def line(self, text: str) -> None:
        if self.quiet:
            return
        self._clear_status()
        print(text, file=self.stream, flush=True)

    def stage_started(self, stage: str, subject: str) -> None:
        self.line(f"==> {stage} {subject}")

    def stage_finished(self, stage: str, status: str, detail: str, seconds: float) -> None:
        marks = {"succeeded": "ok", "skipped": "skipped"}
        mark = marks.get(status, status.upper())
        suffix = f": {detail}" if detail else ""
        self.line(f"    {stage} {mark} in {duration(seconds)}{suffix}")

    def status(self, text: str) -> None:
        """A transient line: redrawn in place on a terminal, printed when it changes otherwise."""
        if self.quiet:
            return
        if self.interactive:
            width = max(self._status_width, len(text))
            self.stream.write("\r" + text.ljust(width))
            self.stream.flush()
            self._status_width = len(text)
        else:
            print(text, file=self.stream, flush=True)

    def _clear_status(self) -> None:
        if self.interactive and self._status_width:
            self.stream.write("\r" + " " * self._status_width + "\r")
            self._status_width = 0


class Progress:
    """Elapsed time and the current step of a long command, shown as one status line."""

    SPINNER = "|/-\\"

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self.started = time.monotonic()
        self.step = "starting"
        self._ticks = 0

    def update(self, step: str | None = None) -> None:
        changed = step is not None and step != self.step
        if step is not None:
            self.step = step
        if not changed and not self.console.interactive:
            return
        self._ticks += 1
        spinner = self.SPINNER[self._ticks % len(self.SPINNER)] if self.console.interactive else "-"
        elapsed = duration(time.monotonic() - self.started)
        self.console.status(f"    {spinner} {self.label} [{elapsed}] {self.step}")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
