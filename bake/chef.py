"""Chef steps: cookbooks converged in local mode on the build machine through `file` and `shell`
provisioners (Packer's own Chef provisioners are archived). The cookbooks a run list needs are
checked (bake.cookbooks) when the step renders, so a bad cookbook stops the run before any cloud
call or VM.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bake.config import ImageConfig, Step
from bake.cookbooks import (
    Cookbook,
    cookbook_problems,
    load_cookbooks,
    needed_cookbooks,
    syntax_problems,
)
from bake.errors import ConfigError, InputError
from bake.provisioners import Block, Expr, StepContext, shell_block

STAGING = "/tmp/bake-chef"
PRODUCTS = ("chef", "cinc")
METHODS = ("omnitruck", "url", "preinstalled")
CLIENT_KEYS = {
    "omnitruck": {"method", "product", "version"},
    "url": {"method", "product", "url", "sha256"},
    "preinstalled": {"method", "product"},
}
CLIENT_EXAMPLE = '{ method = "omnitruck", product = "chef", version = "18.5.0" }'

_RUN_LIST_ITEM = re.compile(r"^recipe\[([A-Za-z0-9_.-]+)(?:::([A-Za-z0-9_.-]+))?\]$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
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


@dataclass(frozen=True)
class Client:
    """How the build machine gets its Chef client."""

    method: str
    product: str = "chef"
    version: str = ""
    url: str = ""
    sha256: str = ""

    def environment(self) -> dict[str, str]:
        """The install script's environment; an s3:// package is presigned by the target at build
        time and arrives as var.chef_package_url."""
        url: str = Expr("var.chef_package_url") if self.url.startswith("s3://") else self.url
        return {
            "BAKE_CHEF_METHOD": self.method,
            "BAKE_CHEF_PRODUCT": self.product,
            "BAKE_CHEF_VERSION": self.version,
            "BAKE_CHEF_URL": url,
            "BAKE_CHEF_SHA256": self.sha256,
        }


@dataclass(frozen=True)
class ChefOptions:
    """A chef step's options, validated."""

    run_list: tuple[str, ...]
    attributes: dict[str, Any]
    client: Client


class _Invalid(ValueError):
    """One problem with a chef step's options; the caller names the image."""


def _require(ok: bool, problem: str) -> None:
    if not ok:
        raise _Invalid(problem)


def _given(key: str, value: Any) -> str:
    """`client.version is missing` or `client.version 'latest' is wrong`, to start a problem."""
    return f"{key} is missing" if value is None else f"{key} {value!r} is wrong"


def parse_options(image: str, options: dict[str, Any]) -> ChefOptions:
    """Validate a chef step's options; ConfigError says what is wrong and what would be right."""
    try:
        unknown = sorted(set(options) - {"run_list", "attributes", "client"})
        _require(
            not unknown,
            f"unknown option {', '.join(unknown)} (known: run_list, attributes, client)",
        )
        return ChefOptions(
            run_list=_parse_run_list(options.get("run_list")),
            attributes=_parse_attributes(options.get("attributes", {})),
            client=_parse_client(options.get("client")),
        )
    except _Invalid as exc:
        raise ConfigError(f"images.{image}.steps: chef: {exc}") from None


def _parse_run_list(raw: Any) -> tuple[str, ...]:
    example = 'write run_list = ["recipe[cookbook]", "recipe[cookbook::recipe]"]'
    _require(isinstance(raw, list) and bool(raw), f"run_list is required ({example})")
    for item in raw:
        ok = isinstance(item, str) and bool(_RUN_LIST_ITEM.match(item))
        _require(ok, f"run_list entry {item!r} is not a recipe ({example})")
    return tuple(raw)


def _parse_attributes(raw: Any) -> dict[str, Any]:
    _require(isinstance(raw, dict), "attributes must be a table: attributes = { golden_web = {} }")
    _require("run_list" not in raw, "attributes cannot set run_list (give recipes in run_list)")
    try:
        json.dumps(raw)
    except TypeError:
        raise _Invalid("attributes may hold strings, numbers, booleans, arrays, tables") from None
    return raw


def _parse_client(raw: Any) -> Client:
    _require(isinstance(raw, dict), f"client is required, for example client = {CLIENT_EXAMPLE}")
    method = raw.get("method")
    _require(
        method in METHODS,
        f"{_given('client.method', method)}: one of {', '.join(METHODS)} "
        f"(for example client = {CLIENT_EXAMPLE})",
    )
    unknown = sorted(set(raw) - CLIENT_KEYS[method])
    keys = ", ".join(sorted(CLIENT_KEYS[method]))
    _require(
        not unknown, f"client.{', '.join(unknown)} is not a key of method {method} (keys: {keys})"
    )
    product = raw.get("product", "chef")
    _require(product in PRODUCTS, f"client.product {product!r} is not one of chef, cinc")
    if method == "omnitruck":
        version = raw.get("version")
        _require(
            isinstance(version, str) and bool(_VERSION.match(version)),
            f"{_given('client.version', version)}: omnitruck needs a pinned version, "
            'such as version = "18.5.0"',
        )
        return Client(method, product, version=version)
    if method == "preinstalled":
        return Client(method, product)
    url, sha256 = raw.get("url"), raw.get("sha256")
    _require(
        isinstance(url, str) and url.startswith(("https://", "s3://")),
        f'{_given("client.url", url)}: the .deb\'s address, "https://..." or "s3://bucket/key"',
    )
    _require(
        not url.startswith("s3://") or "/" in url.removeprefix("s3://").strip("/"),
        f'client.url {url!r} names no object (write "s3://bucket/key")',
    )
    _require(
        isinstance(sha256, str) and bool(_SHA256.match(sha256)),
        f"{_given('client.sha256', sha256)}: the 64 hex digits of the package's SHA-256, "
        "from `sha256sum`",
    )
    return Client(method, product, url=url, sha256=sha256.lower())


def s3_package_url(image: ImageConfig) -> str | None:
    """The s3:// client package of the image's chef steps, which the target presigns at build time
    and passes as `-var chef_package_url=...`; None when no chef step downloads one from S3."""
    urls = {
        parse_options(image.name, step.options).client.url
        for step in image.steps
        if step.kind == "chef"
    }
    s3 = sorted(url for url in urls if url.startswith("s3://"))
    if len(s3) > 1:
        raise ConfigError(
            f"images.{image.name}.steps: chef: one image can fetch one s3:// client package, "
            f"not {len(s3)} ({', '.join(s3)})"
        )
    return s3[0] if s3 else None


def provisioner_blocks(step: Step, context: StepContext) -> list[Block]:
    """Install the client, upload the cookbooks and the node's JSON, converge: four blocks."""
    image = context.image.name
    options = parse_options(image, step.options)
    s3_package_url(context.image)
    cookbooks = _checked_cookbooks(context, options.run_list)
    chef_dir = context.render_dir / "chef"
    staged = _stage_cookbooks(chef_dir / "cookbooks", cookbooks)
    node = json.dumps(node_attributes(options, image), indent=2) + "\n"
    node_json = _write(chef_dir / "node.json", node)
    client_rb = _write(chef_dir / "client.rb", client_config(image))
    converge_env: dict[str, str] = {
        "BAKE_CHEF_PRODUCT": options.client.product,
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
            "chef", context, context.scripts / "chef-install.sh", options.client.environment()
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


def node_attributes(options: ChefOptions, image: str) -> dict[str, Any]:
    """The node JSON: the run list, the step's attributes, and the lineage known at render time.

    The digest, source AMI and run id are only known when the build runs: chef-converge.sh writes
    them to /etc/bake/build.env, where golden_base::lineage reads them.
    """
    node = _merge(options.attributes, {"bake": {"lineage": {"image": image}}})
    return {"run_list": list(options.run_list), **node}


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
