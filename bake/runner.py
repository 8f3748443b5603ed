"""The one door to the outside world: every subprocess the toolkit starts goes through a Runner.

Packer, QEMU, mmdebstrap, ssh and pytest are all started here, so logging, timeouts and
cancellation are written once, and tests can watch or replace every command in one place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bake import signals
from bake.errors import BakeError, CommandFailed, CommandTimedOut

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completed:
    """What a finished command left behind."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Process:
    """A background process (a VM, the local cloud) started by the runner."""

    def __init__(self, popen: subprocess.Popen, argv: list[str]) -> None:
        self._popen = popen
        self.argv = argv

    @property
    def pid(self) -> int:
        return self._popen.pid

    def poll(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout=timeout)

    def stop(self, grace: float = 10.0) -> int:
        """Terminate the process group, then kill it if it outlives `grace` seconds."""
        if self._popen.poll() is not None:
            return self._popen.returncode
        _signal_group(self._popen.pid, signal.SIGTERM)
        try:
            return self._popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(self._popen.pid, signal.SIGKILL)
            return self._popen.wait(timeout=grace)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class _Deadline:
    """Stops a process group when `timeout` seconds pass, and remembers that it did."""

    def __init__(self, popen: subprocess.Popen, timeout: float | None) -> None:
        self.expired = False
        self._timer = threading.Timer(timeout, self._expire, args=(popen.pid,)) if timeout else None
        if self._timer:
            self._timer.daemon = True  # never keeps an exiting toolkit waiting
            self._timer.start()

    def _expire(self, pid: int) -> None:
        self.expired = True
        _signal_group(pid, signal.SIGTERM)

    def cancel(self) -> None:
        if self._timer:
            self._timer.cancel()


def _pump(
    popen: subprocess.Popen, on_line: Callable[[str], None], log_path: Path | None
) -> list[str]:
    """Hand each output line to `on_line` and the log as it comes; keep the last 50 lines."""
    tail: list[str] = []
    assert popen.stdout is not None
    with open(log_path or os.devnull, "a", encoding="utf-8") as log_file:
        for raw in popen.stdout:
            line = raw.rstrip("\n")
            log_file.write(raw)
            log_file.flush()
            tail = (tail + [line])[-50:]
            on_line(line)
    return tail


def _signals_held() -> contextlib.AbstractContextManager[None]:
    """Stop signals wait for the block to end (only the main thread receives them)."""
    if threading.current_thread() is threading.main_thread():
        return signals.held()
    return contextlib.nullcontext()


def _not_started(argv: list[str], exc: OSError) -> BakeError:
    """Why a program did not start: not installed (not on PATH), or not allowed to run."""
    if "/" not in argv[0] and shutil.which(argv[0]) is None:
        return BakeError(f"{argv[0]} is not installed", hint="run `bake doctor`")
    return BakeError(f"{argv[0]} cannot be started: {exc.strerror}")


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(os.environ)
    if env:
        merged.update(env)
    return merged


class Runner:
    """Starts commands. Replace it (or subclass it) in unit tests; the product uses this one."""

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        input: str | None = None,
    ) -> Completed:
        """Run a command to completion and capture its output."""
        argv = [str(a) for a in argv]
        log.debug("run: %s", " ".join(argv))
        started = time.monotonic()
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_environment(env),
                cwd=cwd,
                input=input,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise _not_started(argv, exc) from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandTimedOut(argv, timeout or 0) from exc
        result = Completed(
            argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started
        )
        if check and not result.ok:
            raise CommandFailed(argv, result.returncode, result.stderr or result.stdout)
        return result

    def stream(
        self,
        argv: Sequence[str],
        *,
        on_line: Callable[[str], None],
        log_path: Path | None = None,
        check: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        stop_grace: float = 10.0,
    ) -> Completed:
        """Run a command, handing each output line to `on_line` and to `log_path` as it comes.

        stderr is merged into stdout. Ctrl-C, a stop signal or a timeout stops the whole process
        group: SIGTERM first, SIGKILL when it outlives `stop_grace` seconds.
        """
        argv = [str(a) for a in argv]
        log.debug("stream: %s", " ".join(argv))
        started = time.monotonic()
        popen: subprocess.Popen | None = None
        deadline: _Deadline | None = None
        try:
            # A stop signal waits until the process and its deadline exist, so that it stops both.
            with _signals_held():
                try:
                    popen = subprocess.Popen(
                        argv,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        text=True,
                        bufsize=1,
                        env=_environment(env),
                        cwd=cwd,
                        start_new_session=True,
                    )
                except (FileNotFoundError, PermissionError) as exc:
                    raise _not_started(argv, exc) from exc
                deadline = _Deadline(popen, timeout)
            tail = _pump(popen, on_line, log_path)
            returncode = popen.wait()
        except BaseException:
            if popen is not None:
                Process(popen, argv).stop(grace=stop_grace)
            raise
        finally:
            if deadline is not None:
                deadline.cancel()
        assert deadline is not None
        if deadline.expired:
            raise CommandTimedOut(argv, timeout or 0)
        result = Completed(argv, returncode, "\n".join(tail), "", time.monotonic() - started)
        if check and not result.ok:
            raise CommandFailed(argv, returncode, result.stdout)
        return result

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> Process:
        """Start a background process in its own session, its output going to `log_path`.

        The process outlives this Python process unless stopped; callers that own it stop it.
        """
        argv = [str(a) for a in argv]
        log.debug("spawn: %s", " ".join(argv))
        with open(log_path, "ab") as log_file:
            try:
                popen = subprocess.Popen(
                    argv,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=_environment(env),
                    cwd=cwd,
                    start_new_session=True,
                )
            except (FileNotFoundError, PermissionError) as exc:
                raise _not_started(argv, exc) from exc
        return Process(popen, argv)
