"""The shape every stage has: `run()` does one job and returns an Outcome; `undo()` puts back what a
failed or interrupted `run()` changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from bake.context import RunContext


@dataclass
class Outcome:
    status: Literal["succeeded", "skipped"]
    detail: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def done(cls, detail: str = "", **outputs: Any) -> Outcome:
        return cls("succeeded", detail, outputs)

    @classmethod
    def skipped(cls, detail: str, **outputs: Any) -> Outcome:
        return cls("skipped", detail, outputs)


class Stage:
    """One step of a run. Raise StageFailed (or any BakeError) to fail it."""

    name: ClassVar[str]

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def run(self) -> Outcome:
        raise NotImplementedError

    def undo(self) -> None:
        """Called when `run()` raised or was interrupted; the default has nothing to undo."""
