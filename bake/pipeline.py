"""The order of stages, as data, and the loop that runs them.

Each command is a list of stage names. The loop records every run and stage in history, starts the
target's cloud only when the first stage that needs it comes, and calls a failing stage's `undo()`
before the failure is reported.
"""

from __future__ import annotations

import time
from typing import Any

from bake.aws import images
from bake.context import RunContext
from bake.errors import BakeError, InputError
from bake.stages.base import Stage
from bake.stages.build import Build
from bake.stages.green_asg import GreenAsgStage
from bake.stages.launch_template import LaunchTemplateStage
from bake.stages.register import Register
from bake.stages.render import Render
from bake.stages.rollback import Rollback
from bake.stages.shift import ShiftStage
from bake.stages.verify import Verify

BAKE = ["render", "build", "verify", "register"]
SWAP = ["launch-template", "green-asg", "shift"]

SEQUENCES: dict[str, list[str]] = {
    "render": ["render"],
    "build": ["render", "build"],
    "verify": ["verify"],
    "register": ["register"],
    "swap": SWAP,
    "bake-and-swap": BAKE + SWAP,
    "rollback": ["rollback"],
}

STAGES: dict[str, type[Stage]] = {
    stage.name: stage
    for stage in (
        Render, Build, Verify, Register, LaunchTemplateStage, GreenAsgStage, ShiftStage, Rollback,
    )
}

# Stages that need neither the cloud nor a machine: bad input is found here, before anything runs.
OFFLINE = {"render"}


def lock_names(ctx: RunContext, command: str) -> list[str]:
    names = []
    if ctx.service is not None:
        names.append(f"service-{ctx.service.name}")
    if ctx.image is not None and any(stage in BAKE for stage in SEQUENCES[command]):
        names.append(f"image-{ctx.image.name}")
    return names


def execute(ctx: RunContext, command: str) -> dict[str, Any]:
    """Run one command's stages in order; return the run's id and the stages' outputs."""
    subject = ctx.service.name if ctx.service else ctx.require_image().name
    ctx.run_id = ctx.history.start_run(command, subject, ctx.target.name)
    status, error = "failed", None
    try:
        prepared = False
        for name in SEQUENCES[command]:
            if name not in OFFLINE and not prepared:
                ctx.target.prepare()
                _preflight(ctx, command)
                prepared = True
            _run_stage(ctx, name, subject)
        status = "succeeded"
    except KeyboardInterrupt:
        status, error = "cancelled", "interrupted"
        raise
    except BakeError as exc:
        error = exc.format_message()
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        ctx.history.finish_run(ctx.run_id, status, error)
    return {"run_id": ctx.run_id, "command": command, "subject": subject, "status": status,
            **{key: value for key, value in ctx.outputs.items() if _plain(value)}}


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | dict | list) or value is None


def _preflight(ctx: RunContext, command: str) -> None:
    """Checks that need the cloud but change nothing, made before any stage does work."""
    if ctx.service is None:
        return
    from bake import bluegreen

    try:
        bluegreen.describe(ctx.target.cloud, ctx.service)
    except BakeError as exc:
        raise InputError(exc.message, hint=exc.hint) from None
    if command == "swap":
        ami = ctx.options.get("ami") or images.published(ctx.target.cloud, ctx.service.image)
        if ami is None:
            raise InputError(
                f"image {ctx.service.image} has no published AMI to swap to",
                hint=f"run bake bake-and-swap {ctx.service.name}, or pass --ami",
            )
        if not images.is_verified(ctx.target.cloud, ami):
            raise InputError(
                f"{ami} is not a verified AMI (tag bake:verified=true missing)",
                hint="only AMIs that passed bake verify can be swapped in",
            )
        ctx.outputs["ami"] = ami


def _run_stage(ctx: RunContext, name: str, subject: str) -> None:
    stage = STAGES[name](ctx)
    ctx.stage = name
    stage_id = ctx.history.start_stage(ctx.run_id, name)
    ctx.console.stage_started(name, subject)
    started = time.monotonic()
    try:
        outcome = stage.run()
    except BaseException as exc:
        try:
            stage.undo()
        except Exception as undo_error:  # the original failure matters more; keep both
            ctx.console.line(f"    {name}: undo failed too: {undo_error}")
        reason = exc.format_message() if isinstance(exc, BakeError) else repr(exc)
        state = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
        ctx.history.finish_stage(stage_id, state, reason)
        ctx.console.stage_finished(name, "failed", "", time.monotonic() - started)
        raise
    ctx.outputs.update(outcome.outputs)
    ctx.history.finish_stage(stage_id, outcome.status, outcome.detail, outcome.outputs)
    ctx.console.stage_finished(name, outcome.status, outcome.detail, time.monotonic() - started)
