"""The order of stages, as data, and the loop that runs them.

Each command is a list of stage names. The loop records every run and stage in history and calls a
failing stage's `undo()` before the failure is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bake.aws.errors import cloud_error
from bake.context import RunContext
from bake.errors import BakeError, Cancelled
from bake.records import Records
from bake.stages.base import Stage
from bake.stages.build import Build
from bake.stages.green_asg import GreenAsgStage
from bake.stages.launch_template import LaunchTemplateStage
from bake.stages.prepare import Prepare
from bake.stages.register import Register
from bake.stages.render import Render
from bake.stages.retire import Retire
from bake.stages.rollback import Rollback
from bake.stages.rollout import RolloutStage
from bake.stages.shift import ShiftStage
from bake.stages.verify import Verify

BAKE = ["render", "build", "verify", "register"]
SWAP = ["rollout", "launch-template", "green-asg", "shift"]

# `prepare` starts the target's cloud and checks the service; `render` comes before it so that a
# template that does not render or validate stops the run before any cloud call or VM.
SEQUENCES: dict[str, list[str]] = {
    "render": ["render"],
    "build": ["render", "prepare", "build"],
    "verify": ["prepare", "verify"],
    "register": ["prepare", "register"],
    # An image's whole bake, run first for each parent of an image that has no verified AMI yet.
    "bake": ["render", "prepare", "build", "verify", "register"],
    "swap": ["prepare", *SWAP],
    "bake-and-swap": ["render", "prepare", "build", "verify", "register", *SWAP],
    "rollback": ["prepare", "rollback"],
    "retire": ["prepare", "retire"],
}

STAGES: dict[str, type[Stage]] = {
    stage.name: stage
    for stage in (
        Render,
        Prepare,
        Build,
        Verify,
        Register,
        RolloutStage,
        LaunchTemplateStage,
        GreenAsgStage,
        ShiftStage,
        Rollback,
        Retire,
    )
}


def lock_names(ctx: RunContext, command: str) -> list[str]:
    names = []
    if ctx.service is not None:
        names.append(f"service-{ctx.service.name}")
    bakes = any(stage in BAKE for stage in SEQUENCES[command])
    if ctx.image is not None and (ctx.service is None or bakes):
        names.append(f"image-{ctx.image.name}")
    return names


@dataclass(frozen=True)
class RunResult:
    """How a run ended, and the records its stages handed on."""

    run_id: str
    command: str
    subject: str
    status: str
    records: Records

    def to_dict(self) -> dict[str, Any]:
        """The result as `--json` prints it: the run, then every record's outputs."""
        return {
            "run_id": self.run_id,
            "command": self.command,
            "subject": self.subject,
            "status": self.status,
            **self.records.outputs(),
        }


def execute(ctx: RunContext, command: str) -> RunResult:
    """Run one command's stages in order; the run's id, status and the stages' records."""
    subject = _subject(ctx)
    ctx.command = command
    ctx.run_id = ctx.history.start_run(command, subject, ctx.target.name, ctx.run_id)
    status, error = "failed", None
    try:
        for name in SEQUENCES[command]:
            _run_stage(ctx, name)
        status = "succeeded"
    except KeyboardInterrupt:
        status, error = "cancelled", "interrupted"
        raise
    except Cancelled as exc:
        status, error = "cancelled", str(exc)
        raise
    except BakeError as exc:
        error = exc.format_message()
        raise
    except Exception as exc:
        converted = cloud_error(exc)
        if converted is None:
            error = f"{type(exc).__name__}: {exc}"
            raise
        error = converted.format_message()
        raise converted from exc
    finally:
        ctx.history.finish_run(ctx.run_id, status, error)
    return RunResult(ctx.run_id, command, subject, status, ctx.records)


def _run_stage(ctx: RunContext, name: str) -> None:
    stage = STAGES[name](ctx)
    ctx.stage = name
    stage_id = ctx.history.start_stage(ctx.run_id, name)
    image_stage = name in BAKE and ctx.image is not None
    ctx.console.stage_started(name, ctx.require_image().name if image_stage else _subject(ctx))
    started = time.monotonic()
    try:
        outcome = stage.run()
    except BaseException as exc:
        try:
            stage.undo()
        except Exception as undo_error:  # the original failure matters more; keep both
            ctx.console.line(f"    {name}: undo failed too: {undo_error}")
            if isinstance(exc, BakeError):
                exc.message = f"{exc.message}; undo failed too: {undo_error}"
        reason = exc.format_message() if isinstance(exc, BakeError) else repr(exc)
        state = "cancelled" if isinstance(exc, KeyboardInterrupt | Cancelled) else "failed"
        ctx.history.finish_stage(stage_id, state, reason)
        ctx.console.stage_finished(name, state, "", time.monotonic() - started)
        raise
    for record in outcome.records:
        ctx.records.add(record)
    outputs = outcome.outputs()
    ami = outputs.get("ami")
    if isinstance(ami, str):
        ctx.history.set_run_ami(ctx.run_id, ami)
    ctx.history.finish_stage(stage_id, outcome.status, outcome.detail, outputs)
    ctx.console.stage_finished(name, outcome.status, outcome.detail, time.monotonic() - started)


def _subject(ctx: RunContext) -> str:
    return ctx.service.name if ctx.service else ctx.require_image().name
