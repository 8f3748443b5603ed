"""Facts about this host that the local target needs: free ports, live processes."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def command_line(pid: int | None) -> bytes | None:
    """The command line of a running process; None once it is gone, or a zombie waiting to be
    reaped by whoever inherited it (a killed run's machine is no child of ours)."""
    if not pid_alive(pid):
        return None
    try:
        status = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # the state follows the parenthesised name, which may itself hold spaces or parentheses
    if status.rpartition(")")[2].split()[:1] == ["Z"]:
        return None
    return command


def runs(pid: int | None, *parts: str) -> bool:
    """Whether `pid` is a running process whose command line holds every one of `parts`, so that
    a pid reused since it was recorded is never taken for ours."""
    command = command_line(pid)
    return command is not None and all(part.encode() in command for part in parts)


def pid_alive(pid: int | None) -> bool:
    """Whether `pid` is a live process; a child of ours that has exited is reaped, not counted."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
