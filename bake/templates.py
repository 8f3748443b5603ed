"""Packer templates: Jinja2 in `packer/` rendered to HCL2, then read back with python-hcl2 to check
their structure before Packer itself validates them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hcl2
import jinja2
from hcl2 import SerializationOptions

from bake.blocks import Block, Expr
from bake.errors import InputError
from bake.packer import PackerVersion

# Variables every template declares; the build passes them with -var.
RUN_VARIABLES = (
    "source_ami",
    "build_digest",
    "run_id",
    "manifest_path",
    "inventory_directory",
)


# JSON escapes that HCL lacks, as the \u escapes HCL has.
_NOT_HCL = {"b": "\\u0008", "f": "\\u000c"}


def hcl(value: Any) -> str:
    """An HCL literal for a Python value: strings quoted with `${` and `%{` escaped."""
    if isinstance(value, Expr):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        # Not ASCII-only: JSON would write a character beyond U+FFFF as a surrogate pair
        # ("\ud83d\ude00"), an escape HCL rejects; the rendered file is UTF-8.
        escaped = json.dumps(value, ensure_ascii=False)
        # HCL has no \b or \f escape. Every backslash JSON writes starts an escape, so matching
        # pairs from the left never splits one.
        escaped = re.sub(r"\\(.)", lambda pair: _NOT_HCL.get(pair[1], pair[0]), escaped)
        return escaped.replace("${", "$${").replace("%{", "%%{")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hcl(item) for item in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{hcl(str(key))} = {hcl(item)}" for key, item in value.items())
        return "{ " + inner + " }"
    if value is None:
        return "null"
    raise TypeError(f"no HCL literal for {type(value).__name__}")


def heredoc(text: str, marker: str = "EOT") -> str:
    """An HCL heredoc holding `text` as it is (a script, kept readable in the rendered file): only
    `${` and `%{` are escaped, since a heredoc knows no backslash escapes."""
    body = text.replace("${", "$${").replace("%{", "%%{")
    body = body if body.endswith("\n") else body + "\n"
    if marker in (line.strip() for line in body.splitlines()):
        raise ValueError(f"a line of the text is the heredoc's marker {marker}")
    return f"<<{marker}\n{body}{marker}"


def environment(packer_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(packer_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        autoescape=False,
    )
    env.filters["hcl"] = hcl
    env.filters["heredoc"] = heredoc
    return env


def render(
    packer_dir: Path,
    template: str,
    *,
    image_name: str,
    packer_version: PackerVersion,
    provisioners: list[Block],
    values: dict[str, Any],
) -> str:
    """Render one template; a Jinja2 error becomes an InputError naming the template and line."""
    try:
        jinja_template = environment(packer_dir).get_template(template)
        return jinja_template.render(
            image={"name": image_name},
            packer=packer_version,
            provisioners=provisioners,
            **values,
        )
    except jinja2.TemplateNotFound as exc:
        raise InputError(
            f"template {exc.name} not found in {packer_dir}",
            hint="templates live in the folder set by packer_dir in bake.toml",
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(
            f"{exc.filename or template}:{exc.lineno}: template does not render: {exc.message}"
        ) from None
    except jinja2.UndefinedError as exc:
        raise InputError(f"{template}: template does not render: {exc.message}") from None


def parse(text: str, where: Path) -> dict[str, Any]:
    try:
        return hcl2.loads(
            text, serialization_options=SerializationOptions(strip_string_quotes=True)
        )
    except Exception as exc:  # python-hcl2 raises lark errors of several kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{where}: rendered template is not valid HCL2: {first}") from None


def check_structure(
    parsed: dict[str, Any], where: Path, *, builder: str, image_name: str, steps: int
) -> None:
    """The rendered template has the blocks a build relies on; say which one is missing."""
    sources = [
        (kind, name)
        for source in parsed.get("source", [])
        for kind, named in source.items()
        for name in named
    ]
    if (builder, image_name) not in sources:
        raise InputError(f'{where}: no source "{builder}" "{image_name}" (found {sources})')
    builds = parsed.get("build", [])
    if len(builds) != 1:
        raise InputError(f"{where}: expected exactly one build block, found {len(builds)}")
    build = builds[0]
    if f"source.{builder}.{image_name}" not in build.get("sources", []):
        raise InputError(f"{where}: the build does not use source.{builder}.{image_name}")
    provisioners = build.get("provisioner", [])
    if len(provisioners) != steps:
        raise InputError(
            f"{where}: expected {steps} provisioners from the image's steps, "
            f"found {len(provisioners)}"
        )
    post = [kind for block in build.get("post-processor", []) for kind in block]
    if "manifest" not in post:
        raise InputError(f"{where}: the build has no manifest post-processor")
    declared = {name for block in parsed.get("variable", []) for name in block}
    missing = [name for name in RUN_VARIABLES if name not in declared]
    if missing:
        raise InputError(f"{where}: variables not declared: {', '.join(missing)}")
