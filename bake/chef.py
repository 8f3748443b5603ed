"""Chef steps: cookbooks converged in local mode on the build machine through `file` and `shell`
provisioners (Packer's own Chef provisioners are archived). The step's options are checked when
bake.toml loads (bake.steps); the cookbooks its run list needs are checked (bake.cookbooks) when
the step renders, so a bad cookbook stops the run before any cloud call or VM.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bake.blocks import Block, Expr, StepContext, shell_block
from bake.config import ImageConfig
from bake.cookbooks import (
    Cookbook,
    cookbook_problems,
    load_cookbooks,
    needed_cookbooks,
    syntax_problems,
)
from bake.errors import ConfigError, InputError
from bake.steps import ChefClient, ChefStep, OmnitruckClient, UrlClient

STAGING = "/tmp/bake-chef"
_IGNORED = shutil.ignore_patterns(".*", "*~", "*.swp", "*.orig")

_CLIENT_RB = """\
# Written by goldenbake for image {image}: Chef in local mode on the build machine.
local_mode true
chef_repo_path '{staging}'
cookbook_path ['{staging}/cookbooks']
node_path '{staging}/nodes'
file_cache_path '{staging}/cache'
file_backup_path '{staging}/backup'
client_key '{staging}/client.pem'
node_name 'bake-{image}'
"""


def install_environment(client: ChefClient) -> dict[str, str]:
    """chef-install.sh's environment; an s3:// package is presigned by the target at build time
    and arrives as var.chef_package_url."""
    env = {
        "BAKE_CHEF_METHOD": client.method,
        "BAKE_CHEF_PRODUCT": client.product,
        "BAKE_CHEF_VERSION": "",
        "BAKE_CHEF_URL": "",
        "BAKE_CHEF_SHA256": "",
    }
    match client:
        case OmnitruckClient():
            env["BAKE_CHEF_VERSION"] = client.version
        case UrlClient():
            url = Expr("var.chef_package_url") if client.from_s3 else client.url
            env["BAKE_CHEF_URL"] = url
            env["BAKE_CHEF_SHA256"] = client.sha256
    return env


def s3_package_url(image: ImageConfig) -> str | None:
    """The image's s3:// client package, for the build to presign (see ImageConfig)."""
    return image.s3_package_url


def provisioner_blocks(step: ChefStep, context: StepContext) -> list[Block]:
    """Install the client, upload the cookbooks and the node's JSON, converge: four blocks."""
    image = context.image.name
    cookbooks = _checked_cookbooks(context, step.run_list)
    chef_dir = context.render_dir / "chef"
    staged = _stage_cookbooks(chef_dir / "cookbooks", cookbooks)
    node = json.dumps(node_attributes(step, image), indent=2) + "\n"
    node_json = _write(chef_dir / "node.json", node)
    client_rb = _write(chef_dir / "client.rb", client_config(image))
    converge_env: dict[str, str] = {
        "BAKE_CHEF_PRODUCT": step.client.product,
        "BAKE_IMAGE": image,
        "BAKE_DIGEST": Expr("var.build_digest"),
        "BAKE_SOURCE_AMI": Expr("var.source_ami"),
        "BAKE_RUN_ID": Expr("var.run_id"),
    }
    upload_cookbooks = {
        "source": f"{chef_dir / 'cookbooks'}/",
        "destination": f"{STAGING}/cookbooks",
    }
    upload_node = {"sources": [str(node_json), str(client_rb)], "destination": f"{STAGING}/"}
    return [
        shell_block(
            "chef", context, context.scripts / "chef-install.sh", install_environment(step.client)
        ),
        Block("chef", "file", upload_cookbooks, staged),
        Block("chef", "file", upload_node, (node_json, client_rb)),
        shell_block("chef", context, context.scripts / "chef-converge.sh", converge_env),
    ]


def _checked_cookbooks(context: StepContext, run_list: tuple[str, ...]) -> list[Cookbook]:
    """The cookbooks the run list needs, every one of them checked; ConfigError lists problems."""
    cookbooks_path = context.config.cookbooks_path
    prefix = f"images.{context.image.name}.steps: chef:"
    try:
        cookbooks = load_cookbooks(cookbooks_path)
    except InputError as exc:
        raise ConfigError(f"{prefix} {exc.message}", hint=exc.hint) from None
    needed, problems = needed_cookbooks(cookbooks, run_list)
    for cookbook in needed:
        problems += cookbook_problems(cookbook, cookbooks)
    files = [path for cookbook in needed for path in cookbook.ruby_files()]
    problems += syntax_problems(context.runner, files, cookbooks_path.parent)
    if problems:
        raise ConfigError(f"{prefix} " + "; ".join(problems))
    return needed


def node_attributes(step: ChefStep, image: str) -> dict[str, Any]:
    """The node JSON: the run list, the step's attributes, and the lineage known at render time.

    The digest, source AMI and run id are only known when the build runs: chef-converge.sh writes
    them to /etc/bake/build.env, where golden_base::lineage reads them.
    """
    node = _merge(step.attributes, {"bake": {"lineage": {"image": image}}})
    return {"run_list": list(step.run_list), **node}


def client_config(image: str) -> str:
    """client.rb: local mode, with everything Chef writes kept under the staging folder."""
    return _CLIENT_RB.format(image=image, staging=STAGING)


def _stage_cookbooks(folder: Path, cookbooks: list[Cookbook]) -> tuple[Path, ...]:
    """Copy exactly the needed cookbooks into `folder`; give every file copied, for the digest."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for cookbook in cookbooks:
        shutil.copytree(cookbook.path, folder / cookbook.name, ignore=_IGNORED)
    return tuple(sorted(path for path in folder.rglob("*") if path.is_file()))


def _write(path: Path, text: str) -> Path:
    """Write `text` unless the file already holds it, so a second render touches nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overlay` merged in, tables merged key by key."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
