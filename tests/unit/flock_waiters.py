"""Telling, without timing anything, that a thread of this process waits for a flock: Linux lists
every blocked lock request in /proc/locks with a `->` before it."""

from __future__ import annotations

import os
from pathlib import Path

from bake.polling import wait_until

PROC_LOCKS = Path("/proc/locks")


def waiting_for_flock(pid: int | None = None) -> bool:
    """Whether some thread of process `pid` (this one by default) waits for a flock."""
    pid = os.getpid() if pid is None else pid
    for line in PROC_LOCKS.read_text().splitlines():
        fields = line.split()
        if "->" not in fields:
            continue
        at = fields.index("->")
        if fields[at + 1 : at + 2] == ["FLOCK"] and fields[at + 4 : at + 5] == [str(pid)]:
            return True
    return False


def until_waiting_for_flock(timeout: float = 10.0) -> None:
    """Return once a thread of this process waits for a flock; fail after `timeout` seconds."""
    assert wait_until(waiting_for_flock, timeout, interval=0.01), "no thread waits for a lock"
