"""The shape every stage has: `run()` does one job and returns an Outcome with the records it hands
on; `undo()` puts back what a failed or interrupted `run()` changed in the cloud."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from bake import bluegreen
from bake.bluegreen import ServiceState
from bake.context import RunContext
from bake.records import Observed, Record, Records


@dataclass(frozen=True)
class Outcome:
    status: Literal["succeeded", "skipped"]
    detail: str = ""
    records: tuple[Record, ...] = ()

    @classmethod
    def done(cls, detail: str = "", *records: Record) -> Outcome:
        return cls("succeeded", detail, records)

    @classmethod
    def skipped(cls, detail: str, *records: Record) -> Outcome:
        return cls("skipped", detail, records)

    def outputs(self) -> dict[str, Any]:
        """The records as history and `--json` show them."""
        return Records(*self.records).outputs()


class Stage(ABC):
    """One step of a run. Raise StageFailed (or any BakeError) to fail it."""

    name: ClassVar[str]

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def observed(self) -> ServiceState:
        """The service as this run last saw it (the `Observed` an earlier stage handed on), or
        as the cloud holds it now when no stage has looked yet."""
        found = self.ctx.records.get(Observed)
        if found is not None and found.state is not None:
            return found.state
        return bluegreen.describe(self.ctx.target.cloud, self.ctx.require_service())

    @abstractmethod
    def run(self) -> Outcome:
        """Do the stage's one job, or find it done; the records it hands on."""

    def undo(self) -> None:
        """Called when `run()` raised or was interrupted; the default has nothing to undo."""
