"""Provisioning steps: an explicit registry from a step's name to the Packer provisioner blocks it
renders. An image's `steps` in bake.toml are looked up here, in order, and the `seal` step is always
appended last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bake.config import Config, ImageConfig, Step
from bake.errors import ConfigError
from bake.runner import Runner


class Expr(str):
    """An HCL expression written as is (`var.build_digest`), not quoted as a string."""


@dataclass(frozen=True)
class Block:
    """One Packer provisioner block."""

    step: str
    type: str
    settings: dict[str, Any]
    files: tuple[Path, ...] = field(default=())


@dataclass(frozen=True)
class StepContext:
    """What a step needs to render its blocks: the config, where scripts live, how they run."""

    config: Config
    image: ImageConfig
    target: str
    scripts: Path
    mirror: str
    security_mirror: str
    execute_command: str | None
    runner: Runner
    render_dir: Path


def shell_block(step: str, context: StepContext, script: Path, env: dict[str, str]) -> Block:
    """A `shell` block running `script` with `env`, as the target runs scripts."""
    if not script.is_file():
        raise ConfigError(f"images.{context.image.name}.steps: script {script} does not exist")
    settings: dict[str, Any] = {"script": str(script)}
    if env:
        settings["environment_vars"] = [
            Expr(f'"{key}=${{{value}}}"') if isinstance(value, Expr) else f"{key}={value}"
            for key, value in env.items()
        ]
    if context.execute_command:
        settings["execute_command"] = context.execute_command
    return Block(step, "shell", settings, (script,))


def patch(step: Step, context: StepContext) -> list[Block]:
    env = {
        "BAKE_SUITE": str(step.options.get("suite", "bookworm")),
        "BAKE_MIRROR": str(step.options.get("mirror", context.mirror)),
        "BAKE_SECURITY_MIRROR": str(step.options.get("security_mirror", context.security_mirror)),
    }
    return [shell_block("patch", context, context.scripts / "patch.sh", env)]


def harden(step: Step, context: StepContext) -> list[Block]:
    return [shell_block("harden", context, context.scripts / "harden.sh", {})]


def lineage(step: Step, context: StepContext) -> list[Block]:
    env: dict[str, str] = {
        "BAKE_IMAGE": context.image.name,
        "BAKE_DIGEST": Expr("var.build_digest"),
        "BAKE_SOURCE_AMI": Expr("var.source_ami"),
        "BAKE_RUN_ID": Expr("var.run_id"),
    }
    return [shell_block("lineage", context, context.scripts / "lineage.sh", env)]


def shell(step: Step, context: StepContext) -> list[Block]:
    script = step.options.get("script")
    if not isinstance(script, str):
        raise ConfigError(
            f'images.{context.image.name}.steps: a shell step needs script = "path/to/script.sh"'
        )
    env = {str(k): str(v) for k, v in (step.options.get("environment") or {}).items()}
    return [shell_block("shell", context, context.config.root / script, env)]


def seal(step: Step, context: StepContext) -> list[Block]:
    return [shell_block("seal", context, context.scripts / "seal.sh", {})]


def _chef(step: Step, context: StepContext) -> list[Block]:
    from bake.chef import provisioner_blocks

    return provisioner_blocks(step, context)


PROVISIONERS: dict[str, Callable[[Step, StepContext], list[Block]]] = {
    "patch": patch,
    "harden": harden,
    "lineage": lineage,
    "shell": shell,
    "chef": _chef,
    "seal": seal,
}


def blocks_for(context: StepContext) -> list[Block]:
    """The provisioner blocks of an image's steps, in order, sealed at the end."""
    blocks: list[Block] = []
    for step in [*context.image.steps, Step(kind="seal")]:
        try:
            render_step = PROVISIONERS[step.kind]
        except KeyError:
            raise ConfigError(
                f"images.{context.image.name}.steps: unknown step '{step.kind}'",
                hint=f"known steps: {', '.join(sorted(PROVISIONERS))}",
            ) from None
        blocks.extend(render_step(step, context))
    return blocks
