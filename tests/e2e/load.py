"""Bounded HTTP load through the local load balancer: requests at a steady rate from a small pool
of threads, each answer's status and the machine that served it, stopping by itself after a set
time (or when told to)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Answer:
    """One request: when it was sent, its status (None when it got no HTTP answer) and who
    served it, from the web role's page."""

    sent: float
    status: int | None
    instance_id: str | None = None
    ami: str | None = None
    error: str = ""
    release: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.instance_id is not None


@dataclass
class Load:
    url: str
    rate: float = 20.0
    seconds: float = 600.0
    timeout: float = 10.0
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="request") as pool:
            sent = 0
            while not self._stop.is_set() and time.monotonic() - started < self.seconds:
                pool.submit(self._request)
                sent += 1
                next_at = started + sent / self.rate
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _request(self) -> None:
        sent = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
                page = json.loads(response.read())
                answer = Answer(
                    sent,
                    response.status,
                    page.get("instance_id"),
                    page.get("ami_id"),
                    release=page.get("release"),
                )
        except urllib.error.HTTPError as exc:
            answer = Answer(sent, exc.code, error=str(exc))
        except (OSError, ValueError) as exc:
            answer = Answer(sent, None, error=f"{type(exc).__name__}: {exc}")
        with self._lock:
            self.answers.append(answer)

    def in_order(self) -> list[Answer]:
        with self._lock:
            return sorted(self.answers, key=lambda answer: answer.sent)

    def failures(self) -> list[Answer]:
        return [answer for answer in self.in_order() if not answer.ok]

    def served_by(self) -> list[str | None]:
        """Who answered each request, in the order they were sent (None: no answer)."""
        return [answer.instance_id for answer in self.in_order()]


def answered_by_one_colour_then_the_other(load: Load, before: set[str], after: set[str]) -> None:
    """Every request answered; the first ones by `before`'s machines, the last ones by `after`'s,
    and nobody else."""
    answers = load.in_order()
    failures = load.failures()
    print(f"{len(answers)} requests, {len(failures)} failed")
    assert len(answers) > 40, "the load did not run"
    assert failures == [], f"{len(failures)} of {len(answers)} requests failed: {failures[:5]}"
    served = [answer.instance_id for answer in answers]
    assert set(served) <= before | after, f"answered by {set(served) - before - after} too"
    head, tail = served[:10], served[-10:]
    assert set(head) <= before, f"the first answers came from {set(head) - before}"
    assert set(tail) <= after, f"the last answers came from {set(tail) - after}"
    assert before & set(served) and after & set(served)
