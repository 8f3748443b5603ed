"""Provisioning steps: an explicit registry from a step's kind to the Packer provisioner blocks it
renders. An image's `steps` in bake.toml are looked up here, in order, and the `seal` step is always
appended last. Before the first step and after the seal, the build machine's package list is taken
(`inventory.sh`) and downloaded into the build's inventory directory.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bake import chef, inventory
from bake.blocks import Block, Expr, StepContext, shell_block
from bake.config import ImageConfig
from bake.local import logsink
from bake.steps import (
    HardenStep,
    LineageStep,
    PatchStep,
    PullDeployStep,
    SealStep,
    ShellStep,
    ShipLogsStep,
    SsmAgentStep,
)


def patch(step: PatchStep, context: StepContext) -> list[Block]:
    env = {
        "BAKE_SUITE": step.suite,
        "BAKE_MIRROR": step.mirror or context.mirror,
        "BAKE_SECURITY_MIRROR": step.security_mirror or context.security_mirror,
        # the host's package cache on the local target (empty elsewhere): a build variable, so
        # its address is not part of the build's inputs
        "BAKE_APT_PROXY": Expr("var.apt_proxy"),
    }
    return [shell_block("patch", context, context.scripts / "patch.sh", env)]


def harden(step: HardenStep, context: StepContext) -> list[Block]:
    return [shell_block("harden", context, context.scripts / "harden.sh", {})]


def lineage(step: LineageStep, context: StepContext) -> list[Block]:
    env: dict[str, str] = {
        "BAKE_IMAGE": context.image.name,
        "BAKE_DIGEST": Expr("var.build_digest"),
        "BAKE_SOURCE_AMI": Expr("var.source_ami"),
        "BAKE_RUN_ID": Expr("var.run_id"),
    }
    return [shell_block("lineage", context, context.scripts / "lineage.sh", env)]


def shell(step: ShellStep, context: StepContext) -> list[Block]:
    """A script of the user's, with its environment and BAKE_APT_PROXY: the host's package cache
    on the local target, empty elsewhere, for a script that installs packages to pass to apt."""
    script = context.config.root / step.script
    env: dict[str, str] = {**step.environment, "BAKE_APT_PROXY": Expr("var.apt_proxy")}
    return [shell_block("shell", context, script, env)]


SSM_AGENT_SCRIPT = "ssm-agent.sh"


def ssm_agent(step: SsmAgentStep, context: StepContext) -> list[Block]:
    return [
        shell_block("ssm-agent", context, context.scripts / SSM_AGENT_SCRIPT, _agent_pins(step))
    ]


def _agent_pins(step: SsmAgentStep | None) -> dict[str, str]:
    if step is None:
        return {}
    pins = {"BAKE_SSM_AGENT_VERSION": step.version}
    if step.sha256:
        pins["BAKE_SSM_AGENT_SHA256"] = step.sha256
    return pins


def ssm_agent_user_data(scripts: Path, image: ImageConfig) -> str:
    """The SSM agent's script as a build instance's user data (its first boot installs the agent
    when the source lacks it), pinned as the image's `ssm-agent` step pins it."""
    shebang, _, body = (scripts / SSM_AGENT_SCRIPT).read_text(encoding="utf-8").partition("\n")
    step = next((s for s in image.steps if isinstance(s, SsmAgentStep)), None)
    pins = "".join(f"{key}={shlex.quote(value)}\n" for key, value in _agent_pins(step).items())
    return f"{shebang}\n{pins}{body}"


def ship_logs(step: ShipLogsStep, context: StepContext) -> list[Block]:
    """rsyslog to the host's collector on the local target; on aws, rsyslog and the CloudWatch
    agent to the step's log group. The packages come through the host's cache where there is one,
    as the patch step's do."""
    env: dict[str, str] = {}
    if context.target == "local":
        env["BAKE_SHIP_LOGS_TO"] = "collector"
        env["BAKE_SHIP_LOGS_COLLECTOR"] = f"{logsink.GUEST_ADDRESS}:{logsink.GUEST_PORT}"
    else:
        env["BAKE_SHIP_LOGS_TO"] = "cloudwatch"
        env["BAKE_SHIP_LOGS_GROUP"] = step.group_for(context.image.name)
        if step.retention_days is not None:
            env["BAKE_SHIP_LOGS_RETENTION"] = str(step.retention_days)
        env["BAKE_CLOUDWATCH_AGENT_VERSION"] = step.agent_version
        if step.agent_sha256:
            env["BAKE_CLOUDWATCH_AGENT_SHA256"] = step.agent_sha256
    if step.files:
        env["BAKE_SHIP_LOGS_FILES"] = " ".join(step.files)
    env["BAKE_APT_PROXY"] = Expr("var.apt_proxy")
    return [shell_block("ship-logs", context, context.scripts / "ship-logs.sh", env)]


def seal(step: SealStep, context: StepContext) -> list[Block]:
    return [shell_block("seal", context, context.scripts / "seal.sh", {})]


def pull_deploy(step: PullDeployStep, context: StepContext) -> list[Block]:
    """The boot-time agent (uploaded, then installed with its units by pull-deploy.sh)."""
    agent = context.scripts / "pull-release.py"
    upload = Block(
        "pull-deploy",
        "file",
        {"source": str(agent), "destination": "/tmp/bake-pull-release"},
        (agent,),
    )
    env = {
        "BAKE_APP_DIR": step.directory,
        "BAKE_APP_USER": step.user,
        "BAKE_RELEASE_BEFORE": " ".join(step.before),
    }
    return [upload, shell_block("pull-deploy", context, context.scripts / "pull-deploy.sh", env)]


# Each function takes the step model of its kind; bake.config has checked every kind at load.
PROVISIONERS: dict[str, Callable[[Any, StepContext], list[Block]]] = {
    "patch": patch,
    "harden": harden,
    "lineage": lineage,
    "shell": shell,
    "chef": chef.provisioner_blocks,
    "ssm-agent": ssm_agent,
    "ship-logs": ship_logs,
    "pull-deploy": pull_deploy,
    "seal": seal,
}


def inventory_blocks(context: StepContext, name: str) -> list[Block]:
    """List the build machine's packages into /run and download the list as `name`."""
    on_machine = f"/run/bake-{name}"
    env = {"BAKE_INVENTORY_FILE": on_machine}
    download = {
        "direction": "download",
        "source": on_machine,
        "destination": Expr(f'"${{var.inventory_directory}}/{name}"'),
    }
    return [
        shell_block("inventory", context, context.scripts / "inventory.sh", env),
        Block("inventory", "file", download),
    ]


def blocks_for(context: StepContext) -> list[Block]:
    """The provisioner blocks of an image's steps, in order, sealed at the end, with the package
    lists of the source before them and of the image after them; on an emulated build machine,
    first of all the running kernel's setting that lets every process reuse QEMU's translations."""
    blocks = []
    if context.emulated:
        blocks.append(shell_block("emulated", context, context.scripts / "emulated.sh", {}))
    blocks.extend(inventory_blocks(context, inventory.SOURCE_LIST))
    for step in [*context.image.steps, SealStep()]:
        blocks.extend(PROVISIONERS[step.kind](step, context))
    return [*blocks, *inventory_blocks(context, inventory.IMAGE_LIST)]
