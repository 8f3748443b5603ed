"""What a run tells the person watching it: stage lines on stderr, one-line progress for long steps.

stdout is kept for results (`--json`); everything here goes to stderr.
"""

from __future__ import annotations

import sys
import threading
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
        # a progress line may be redrawn from its own thread while the run prints
        self._lock = threading.RLock()

    def line(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
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
        with self._lock:
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
    """Elapsed time, the current step of a long command and what it is doing within it (a package
    being unpacked, N of M), shown as one status line. On a terminal the line is redrawn as things
    change and every second while the command runs (`with progress:`); in a log it is a line per
    step, and a line at most every `every` seconds while a step reports what it is doing."""

    SPINNER = "|/-\\"
    EVERY = 15.0

    def __init__(self, console: Console, label: str, every: float = EVERY) -> None:
        self.console = console
        self.label = label
        self.every = every
        self.started = time.monotonic()
        self.step = "starting"
        self.detail = ""
        self._ticks = 0
        self._printed = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def update(self, step: str | None = None, detail: str | None = None) -> None:
        """A new step (which clears the detail), or what the current step is doing now."""
        with self._lock:
            step_changed = step is not None and step != self.step
            if step_changed:
                self.step, self.detail = step or "", ""
            detail_changed = detail is not None and detail != self.detail
            if detail_changed:
                self.detail = detail or ""
            if self.console.interactive:
                if step_changed or detail_changed:
                    self._draw()
                return
            now = time.monotonic()
            if step_changed or (detail_changed and now - self._printed >= self.every):
                self._printed = now
                self._draw()

    def _draw(self) -> None:
        self._ticks += 1
        spinner = self.SPINNER[self._ticks % len(self.SPINNER)] if self.console.interactive else "-"
        elapsed = duration(time.monotonic() - self.started)
        doing = f": {self.detail}" if self.detail else ""
        self.console.status(f"    {spinner} {self.label} [{elapsed}] {self.step}{doing}")

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                self._draw()

    def __enter__(self) -> Progress:
        if self.console.interactive and not self.console.quiet:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
