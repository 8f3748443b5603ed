"""Locks that hold across machines: a lease per lock name in a DynamoDB table whose partition key is
the string `LockID` (the convention of Terraform's S3 backend), for teams whose runs start on more
than one runner. One machine alone uses the flock of `bake.locks`; both have the same interface.

A lease is taken with a conditional write (no item, or an item whose lease has lapsed), renewed by
a thread while the run lives, and deleted when it ends. A holder that stops renewing (killed, cut
off) loses its lease at most `ttl` seconds later.
"""

from __future__ import annotations

import _thread
import json
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from botocore.exceptions import ClientError

from bake import locks
from bake.aws.errors import error_code
from bake.aws.session import Cloud
from bake.errors import InputError, LeaseLost, LockHeld

LEASE_SECONDS = 60.0
RENEW_SECONDS = 15.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: enough for the next runner to say whom it waits for."""

    command: str
    run_id: str
    host: str
    pid: int
    since: str

    @classmethod
    def this_run(cls, command: str, run_id: str) -> Holder:
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(command, run_id, socket.gethostname(), os.getpid(), since)

    def describe(self) -> str:
        where = f"{self.host} (pid {self.pid})"
        return f"bake {self.command} run {self.run_id} on {where} since {self.since}"


class FileLocks:
    """Locks of one machine: a flock per name in the state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @contextmanager
    def hold_all(self, names: list[str], holder: Holder) -> Iterator[None]:
        with locks.hold_all(self.directory, names, holder.describe()):
            yield


class LeaseLocks:
    """Locks of every runner of an account: a renewed lease per name in a DynamoDB table."""

    def __init__(
        self,
        cloud: Cloud,
        table: str,
        *,
        ttl: float = LEASE_SECONDS,
        renew_every: float = RENEW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cloud = cloud
        self.table = table
        self.ttl = ttl
        self.renew_every = renew_every
        self.clock = clock

    @contextmanager
    def hold_all(self, names: list[str], holder: Holder) -> Iterator[None]:
        """Hold a lease on every name (in a fixed order), renewed until the block ends."""
        token = secrets.token_hex(16)
        with ExitStack() as stack:
            for name in sorted(set(names)):
                self._take(name, holder, token)
                stack.callback(self._release, name, token)
            stack.enter_context(self._renewing(sorted(set(names)), token))
            yield

    def _client(self) -> Any:
        return self.cloud.client("dynamodb")

    def _take(self, name: str, holder: Holder, token: str) -> None:
        now = self.clock()
        try:
            self._client().put_item(
                TableName=self.table,
                Item={
                    "LockID": {"S": name},
                    "Token": {"S": token},
                    "Holder": {"S": json.dumps(asdict(holder))},
                    "Expires": {"N": f"{now + self.ttl:.3f}"},
                },
                ConditionExpression="attribute_not_exists(LockID) OR Expires < :now",
                ExpressionAttributeValues={":now": {"N": f"{now:.3f}"}},
            )
        except ClientError as exc:
            code = error_code(exc)
            if code == "ResourceNotFoundException":
                raise InputError(
                    f"lock_table '{self.table}' does not exist in {self.cloud.region}",
                    hint="create it with the partition key LockID (a string)",
                ) from None
            if code != "ConditionalCheckFailedException":
                raise
            raise self._held(name) from None

    def _held(self, name: str) -> LockHeld:
        found = (
            self._client()
            .get_item(TableName=self.table, Key={"LockID": {"S": name}}, ConsistentRead=True)
            .get("Item", {})
        )
        try:
            who = Holder(**json.loads(found["Holder"]["S"])).describe()
        except (KeyError, TypeError, ValueError):
            who = "another run"
        return LockHeld(
            f"{name} is locked by {who}",
            hint=f"wait for that run to finish; a lease lapses {self.ttl:.0f}s after its holder "
            "stops renewing it",
        )

    def _renew(self, name: str, token: str) -> None:
        self._client().update_item(
            TableName=self.table,
            Key={"LockID": {"S": name}},
            UpdateExpression="SET Expires = :expires",
            ConditionExpression="#token = :token",
            ExpressionAttributeNames={"#token": "Token"},
            ExpressionAttributeValues={
                ":expires": {"N": f"{self.clock() + self.ttl:.3f}"},
                ":token": {"S": token},
            },
        )

    def _release(self, name: str, token: str) -> None:
        try:
            self._client().delete_item(
                TableName=self.table,
                Key={"LockID": {"S": name}},
                ConditionExpression="#token = :token",
                ExpressionAttributeNames={"#token": "Token"},
                ExpressionAttributeValues={":token": {"S": token}},
            )
        except ClientError as exc:  # the lease lapsed and another run took it: leave theirs
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    @contextmanager
    def _renewing(self, names: list[str], token: str) -> Iterator[None]:
        """Renew the leases in a thread; if one is lost, stop the run (LeaseLost, raised in the
        main thread by the SIGINT handler this installs, so it works even where SIGINT is
        ignored, as in a script's background job)."""
        stop = threading.Event()
        lost: list[str] = []

        def renew() -> None:
            while not stop.wait(self.renew_every):
                for name in names:
                    try:
                        self._renew(name, token)
                    # Lost, or not renewable after botocore's retries (an unreadable answer
                    # included): the run cannot show it still holds its lock, so it stops.
                    except Exception as exc:
                        taken = isinstance(exc, ClientError) and (
                            error_code(exc) == "ConditionalCheckFailedException"
                        )
                        lost.append(
                            f"{name} was taken by another run or removed"
                            if taken
                            else f"{name} could not be renewed ({exc})"
                        )
                        _thread.interrupt_main()
                        return

        with _interrupts_raise(lost):
            thread = threading.Thread(target=renew, name="bake-lease", daemon=True)
            thread.start()
            try:
                yield
            finally:
                stop.set()
                thread.join()


@contextmanager
def _interrupts_raise(lost: list[str]) -> Iterator[None]:
    """While the block runs, a SIGINT (real, or from the renewing thread) raises LeaseLost once
    a lease is lost, and otherwise does what it did before (Ctrl-C: KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        if lost:
            raise LeaseLost(lost[0])
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
