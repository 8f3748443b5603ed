"""Bounded waits, for the APIs that have no boto3 waiter and for local processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# Patched by tests that must not wait; every bounded poll in the toolkit sleeps through it.
sleep = time.sleep


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 2.0) -> bool:
    """Poll `predicate` until it is truthy or `timeout` seconds pass; says whether it came true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sleep(min(interval, remaining))


def waiter_config(timeout: float, delay: float = 15.0) -> dict[str, int]:
    """A boto3 WaiterConfig that gives up after about `timeout` seconds."""
    delay = max(1, min(int(delay), int(timeout // 4) or 1))
    return {"Delay": delay, "MaxAttempts": max(1, int(timeout // delay) + 1)}
