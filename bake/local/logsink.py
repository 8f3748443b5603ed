"""The local target's log collector: the lines a machine ships on one TCP connection, appended to a
file on the host the moment each one is complete.

QEMU's user networking runs `python -m bake.local.logsink DIR [NAME]` for each TCP connection a
guest opens to 169.254.169.253:514 (`guestfwd=...-cmd:`), as it runs bake.local.imds for the
metadata service. rsyslog in the guest (the `ship-logs` step) keeps one connection open and sends
each message as one line (TCP syslog's traditional framing: the message, then LF). Every complete
line is appended to DIR/NAME (`messages.log` unless named) with one write(2) on a file opened with
O_APPEND, so the lines of two connections of one machine (rsyslog reconnecting) never interleave
within a line, and a reader on the host sees a line as soon as it has arrived. A last line that the
connection ends without LF is kept, with one. The directory and the file outlive the machine.

libslirp makes the connection the process's stdin, stdout *and* stderr: nothing is ever written to
them (a complaint is dropped when stderr is that socket). It starts once per connection, so it
imports only os, signal, stat and sys.
"""

from __future__ import annotations

import os
import signal
import stat
import sys

# The collector's address as the guest sees it; the ship-logs step points rsyslog at it.
GUEST_ADDRESS = "169.254.169.253"
GUEST_PORT = 514
DEFAULT_NAME = "messages.log"
READ_SIZE = 65536
# A line longer than this without LF is written out in parts rather than held without bound.
MAX_PENDING = 1 << 20
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


class _Stopped(Exception):
    """SIGTERM or SIGHUP (QEMU's process group stopped): keep what has arrived, then exit."""


def command(directory: os.PathLike[str] | str, name: str | None = None, python: str = "") -> str:
    """The guestfwd command that appends a connection's lines to `directory`/`name`.

    QEMU splits its options at commas and libslirp the command at whitespace and quotes, so the
    parts may hold none of them (ValueError otherwise)."""
    from bake.local.imds import UNSAFE_IN_COMMAND

    python = python or sys.executable
    path = os.path.abspath(directory)
    if name is not None and (not name or "/" in name or name in (".", "..")):
        raise ValueError(f"{name!r} is not a file name for the collector")
    for part in (python, path, name or DEFAULT_NAME):
        if not part or any(char in UNSAFE_IN_COMMAND or char.isspace() for char in part):
            raise ValueError(
                f"cannot use {part!r} in QEMU's guestfwd command: QEMU splits its options at "
                "commas and libslirp splits the command at whitespace and quotes, so the path "
                "must have no comma, whitespace, quote or backslash"
            )
    return f"{python} -m bake.local.logsink {path}" + (f" {name}" if name else "")


def collect(reader: int, target: int) -> int:
    """Copy the lines read from descriptor `reader` to `target` until the input ends; the number of
    bytes written. Only whole lines are written, each batch in one write; the input's last bytes
    get a LF if they lack one."""
    pending = b""
    written = 0
    try:
        while True:
            try:
                data = os.read(reader, READ_SIZE)
            except (ConnectionResetError, TimeoutError):  # the guest's side went away
                break
            if not data:
                break
            pending += data
            end = pending.rfind(b"\n") + 1
            if end:
                written += _write(target, pending[:end])
                pending = pending[end:]
            elif len(pending) >= MAX_PENDING:
                written += _write(target, pending + b"\n")
                pending = b""
    except _Stopped:
        pass
    if pending:
        written += _write(target, pending + b"\n")
    return written


def _write(target: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(target, view) :]
    return len(data)


def _stop(signum: int, frame: object) -> None:
    raise _Stopped


def _complain(message: str) -> None:
    """A line on stderr, unless stderr is the guest's connection, as libslirp makes it."""
    try:
        if stat.S_ISSOCK(os.fstat(2).st_mode):
            return
        os.write(2, f"bake.local.logsink: {message}\n".encode(errors="replace"))
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Append the lines of the connection on stdin to the file the command line names."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        _complain("usage: python -m bake.local.logsink DIR [NAME]")
        return 2
    directory = args[0]
    name = args[1] if len(args) == 2 else DEFAULT_NAME
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    try:
        os.makedirs(directory, mode=DIRECTORY_MODE, exist_ok=True)
        target = os.open(
            os.path.join(directory, name),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
            FILE_MODE,
        )
    except OSError as exc:
        _complain(f"cannot open {os.path.join(directory, name)}: {exc}")
        return 1
    try:
        collect(0, target)
    except OSError as exc:  # the host's disk, not the guest: say so where someone may read it
        _complain(f"cannot write {os.path.join(directory, name)}: {exc}")
        return 1
    finally:
        os.close(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
