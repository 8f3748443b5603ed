"""render: the image's Packer template for this target, written under the state directory, read back
with python-hcl2, then checked by `packer validate`. Nothing boots and no cloud is called here."""

from __future__ import annotations

from pathlib import Path

from bake import packer, templates
from bake.blocks import StepContext
from bake.config import ImageConfig
from bake.context import RunContext
from bake.errors import CommandFailed, InputError
from bake.provisioners import blocks_for
from bake.records import Rendered
from bake.stages.base import Outcome, Stage


def render_image(ctx: RunContext, image: ImageConfig) -> Rendered:
    """Render, parse back and validate one image's template; raise InputError when it is wrong."""
    version = packer.detect_version(ctx.runner)
    settings = ctx.target.template_context(image, version)
    step_context = StepContext(
        config=ctx.config,
        image=image,
        target=ctx.target.name,
        scripts=ctx.config.packer_path / "scripts",
        mirror=settings["mirror"],
        security_mirror=settings["security_mirror"],
        execute_command=settings.get("execute_command"),
        runner=ctx.runner,
        render_dir=ctx.state.rendered(image.name, ctx.target.name).parent,
        emulated=settings.get("emulated", False),
    )
    blocks = blocks_for(step_context)
    if settings.get("communicator") == "none":
        ctx.console.line(f"    communicator none: the {len(blocks)} provisioning steps are not run")
        blocks = []
    text = templates.render(
        ctx.config.packer_path,
        ctx.target.template(),
        image_name=image.name,
        packer_version=version,
        provisioners=blocks,
        values=settings,
    )
    path = ctx.state.rendered(image.name, ctx.target.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    parsed = templates.parse(text, path)
    templates.check_structure(
        parsed, path, builder=settings["builder"], image_name=image.name, steps=len(blocks)
    )
    validate(ctx, path, version)
    files = tuple(sorted({file for block in blocks for file in block.files}))
    return Rendered(path, text, files, str(version))


def validate(ctx: RunContext, path: Path, version: packer.PackerVersion) -> None:
    if version.has_required_plugins:
        ctx.runner.run(["packer", "init", str(path)], env=packer.PACKER_ENV, timeout=600)
    variables = ctx.target.placeholder_variables()
    argv = ["packer", "validate"]
    for name, value in sorted(variables.items()):
        argv += ["-var", f"{name}={value}"]
    try:
        ctx.runner.run([*argv, str(path)], env=packer.PACKER_ENV, timeout=120, cwd=path.parent)
    except CommandFailed as exc:
        problem = " ".join(line.strip() for line in exc.output.splitlines() if line.strip())
        raise InputError(f"{path}: packer validate failed: {problem[:400]}") from None


class Render(Stage):
    name = "render"

    def run(self) -> Outcome:
        rendered = render_image(self.ctx, self.ctx.require_image())
        return Outcome.done(f"{rendered.path} (packer {rendered.packer_version})", rendered)
