"""The order of stages, as data, and the loop that runs them.

Each command is a list of stage names. The loop records every run and stage in history and calls a
failing stage's `undo()` before the failure is reported.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any

from bake.aws.errors import cloud_error
from bake.context import RunContext
from bake.errors import BakeError, Cancelled
from bake.records import Records
from bake.stages.base import Stage

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
    # A release of the application: the same AMI, a new launch template version naming it.
    "release": ["prepare", "release", *SWAP],
    "release-only": ["prepare", "release"],
    "retire": ["prepare", "retire"],
}


class _Stages(dict[str, type[Stage]]):
    """Stage classes by name, each module imported when a run first needs it: a swap does not
    import what rendering and building need (Jinja2, python-hcl2, the SBOM library), which matters
    when a rollout starts fifty `bake swap` processes."""

    def __init__(self, paths: dict[str, str]) -> None:
        super().__init__()
        self.paths = paths

    def __missing__(self, name: str) -> type[Stage]:
        module, _, attribute = self.paths[name].partition(":")
        stage: type[Stage] = getattr(importlib.import_module(module), attribute)
        self[name] = stage
        return stage

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or name in self.paths


STAGES = _Stages(
    {
        "render": "bake.stages.render:Render",
        "prepare": "bake.stages.prepare:Prepare",
        "build": "bake.stages.build:Build",
        "verify": "bake.stages.verify:Verify",
        "register": "bake.stages.register:Register",
        "rollout": "bake.stages.rollout:RolloutStage",
        "launch-template": "bake.stages.launch_template:LaunchTemplateStage",
        "green-asg": "bake.stages.green_asg:GreenAsgStage",
        "shift": "bake.stages.shift:ShiftStage",
        "rollback": "bake.stages.rollback:Rollback",
        "release": "bake.stages.release:ReleaseStage",
        "retire": "bake.stages.retire:Retire",
    }
)


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
