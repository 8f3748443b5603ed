"""Stop signals: SIGTERM (a cancelled CI job) and SIGHUP (a closed terminal) end a run as Ctrl-C
does, by raising `Cancelled` where the run is.

Between creating a resource and recording it (and registering its cleanup) a stop signal waits:
it takes effect when that short block ends, so nothing is created without a record that `undo`,
cleanup or `bake recover` can find.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from bake.errors import Cancelled

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

# Stop signals that arrived inside `held()`; None when no block holds them.
_held: list[int] | None = None


def cancel(signum: int, _frame: FrameType | None) -> None:
    """The stop signals' handler: unwind the run (later stop signals are ignored so that its
    cleanup can finish), or, inside `held()`, once the block ends."""
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    if _held is not None:
        _held.append(signum)
        return
    raise Cancelled(signum)


@contextmanager
def held() -> Iterator[None]:
    """Create a resource and record it in here: a stop signal waits for the block to end."""
    global _held
    outer = _held
    if outer is None:
        _held = []
    try:
        yield
    finally:
        caught, _held = _held, outer
        if outer is None and caught:
            raise Cancelled(caught[0])
