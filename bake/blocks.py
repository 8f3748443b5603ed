"""What a provisioning step renders, Packer provisioner blocks, and what it needs to render them:
shared by bake.provisioners and bake.chef, read by bake.templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bake.config import Config, ImageConfig
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
    # the build machine runs under QEMU's TCG (the local target without KVM)
    emulated: bool = False


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
