"""The toolkit's exceptions, in one place.

Library code raises these; only the CLI prints them and chooses the exit code. Each error
carries the exit code the CLI should use and an optional hint that says what would be right.
"""

from __future__ import annotations

import signal


class BakeError(Exception):
    """Base of every error the toolkit reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def format_message(self) -> str:
        """One line: what is wrong and, when known, what would be right."""
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message

    def __str__(self) -> str:
        return self.format_message()


class InputError(BakeError):
    """Bad input: usage, configuration, templates. Nothing has been done."""

    exit_code = 2


class ConfigError(InputError):
    """`bake.toml` is missing, malformed or inconsistent."""


class StageFailed(BakeError):
    """A stage of a run failed; nothing was promoted and traffic is unchanged or restored."""

    exit_code = 1

    def __init__(self, stage: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{stage}: {message}", hint=hint)
        self.stage = stage


class CommandFailed(BakeError):
    """A subprocess exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, output: str = "") -> None:
        tail = output.strip().splitlines()[-1] if output.strip() else ""
        detail = f": {tail}" if tail else ""
        super().__init__(f"{argv[0]} exited with status {returncode}{detail}")
        self.argv = argv
        self.returncode = returncode
        self.output = output


class CommandTimedOut(BakeError):
    """A subprocess did not finish in time; the runner stopped it."""

    def __init__(self, argv: list[str], timeout: float) -> None:
        super().__init__(f"{argv[0]} did not finish within {timeout:.0f}s")
        self.argv = argv
        self.timeout = timeout


class LockHeld(BakeError):
    """Another run holds the lock of a service or image."""

    exit_code = 3


class ToolMissing(BakeError):
    """A program the toolkit needs is not installed."""

    exit_code = 1


class ChecksFailed(BakeError):
    """`bake doctor` found something the toolkit needs missing."""

    exit_code = 1


class Cancelled(BaseException):
    """A run was told to stop by a signal (SIGTERM from a cancelled CI job, SIGHUP from a closed
    terminal). Like Ctrl-C it unwinds through every stage's undo() and every cleanup; it is not an
    Exception, so no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"cancelled by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class LeaseLost(Cancelled):
    """The run's lock lease could not be renewed (another run took it, or the lock table stopped
    answering): the run stops as a cancelled one does, its running stage undone."""

    def __init__(self, detail: str) -> None:
        BaseException.__init__(self, f"lost the lock: {detail}")
        self.signum = signal.SIGINT

    @property
    def exit_code(self) -> int:
        return LockHeld.exit_code
