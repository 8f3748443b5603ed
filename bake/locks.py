"""Per-service (and per-image) locks, so that two runs never change the same thing at once.

A lock is an exclusive `flock` on a file in the state directory: the kernel releases it when the
process ends, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bake.errors import LockHeld


@contextmanager
def hold(directory: Path, name: str, holder: str) -> Iterator[None]:
    """Hold the lock called `name`, or raise LockHeld at once if another run holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = path.read_text(encoding="utf-8").strip() or "another run"
            raise LockHeld(
                f"{name} is locked by {current}", hint="wait for that run to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def hold_all(directory: Path, names: list[str], holder: str) -> Iterator[None]:
    """Hold several locks, taken in a fixed order so that two runs cannot deadlock."""
    with ExitStack() as stack:
        for name in sorted(set(names)):
            stack.enter_context(hold(directory, name, holder))
        yield


@contextmanager
def waiting(directory: Path, name: str) -> Iterator[None]:
    """Hold the lock called `name`, waiting for another holder to finish (for shared work, such
    as building the base disk, that a second run should reuse rather than refuse)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
