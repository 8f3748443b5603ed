"""build: `packer build` of the rendered template, streaming progress and logging every line; the
artifact is taken from Packer's manifest. A build whose inputs were already built is reused."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from bake import chef, packer
from bake.config import ImageConfig
from bake.console import Progress, duration
from bake.errors import CommandFailed, StageFailed
from bake.records import Built, Rendered, SourceImage
from bake.stages.base import Outcome, Stage
from bake.stages.render import render_image

DIGEST_VERSION = b"goldenbake-build-1"


def build_digest(
    rendered: Rendered, source: SourceImage, image: ImageConfig, target: str, day: str
) -> str:
    """The digest of everything that decides what a build produces.

    The patch step's real input is the state of the Debian archive, so an image with a patch step
    includes the (UTC) day: a nightly bake rebuilds, a second bake the same day reuses.
    """
    digest = hashlib.sha256(DIGEST_VERSION)
    digest.update(f"\0target={target}\0".encode())
    digest.update(rendered.text.encode())
    for path in rendered.files:
        digest.update(f"\0file={path.name}\0".encode())
        digest.update(path.read_bytes())
    digest.update(f"\0source={source.artifact or source.ami}\0".encode())
    if image.has_step("patch"):
        digest.update(f"\0patch-day={day}\0".encode())
    return digest.hexdigest()


class Build(Stage):
    name = "build"

    def run(self) -> Outcome:
        ctx, image = self.ctx, self.ctx.require_image()
        rendered = ctx.records.get(Rendered) or render_image(ctx, image)
        source = ctx.target.resolve_base(image)
        previous = ctx.history.newest_verified(image.name)
        if previous and previous.built.source_ami != source.ami:
            ctx.console.line(
                f"    base rotated: {image.name} was last verified on {previous.built.source_ami}, "
                f"its base is now {source.ami}"
            )
        digest = build_digest(
            rendered, source, image, ctx.target.name, datetime.now(UTC).date().isoformat()
        )
        if not ctx.options.rebuild:
            for earlier in ctx.history.builds(image.name, digest):
                if ctx.target.still_exists(earlier.built()):
                    return Outcome.skipped(
                        f"inputs {digest[:12]} already built by run {earlier.run_id}",
                        earlier.built(),
                    )
        built = self._packer_build(rendered, source, digest)
        ctx.history.record_build(ctx.run_id, built)
        return Outcome.done(
            f"{built.ami or 'artifact ' + (built.artifact or '')[:12]} from {source.description}",
            built,
        )

    def _packer_build(self, rendered: Rendered, source: SourceImage, digest: str) -> Built:
        ctx, image = self.ctx, self.ctx.require_image()
        with ctx.state.scratch(f"build-{image.name}-{ctx.run_id}") as work:
            manifest_path = work / "manifest.json"
            variables = {
                **source.variables,
                "source_ami": source.ami,
                "build_digest": digest,
                "run_id": ctx.run_id,
                "manifest_path": str(manifest_path),
                **ctx.target.build_variables(work),
            }
            if package := chef.s3_package_url(image):
                variables["chef_package_url"] = ctx.target.chef_package_url(package)
            self._run_packer(rendered.path, variables, work)
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            built = ctx.target.collect(manifest, image, digest, source)
        ctx.record_resource("ami" if built.ami else "artifact", built.ami or built.artifact or "")
        return built

    def _run_packer(self, template: Path, variables: dict[str, str], work: Path) -> None:
        """`packer build` with these variables, its progress on the console, every line logged."""
        ctx, image = self.ctx, self.ctx.require_image()
        argv = ["packer", "build", "-machine-readable", "-color=false"]
        for name, value in sorted(variables.items()):
            argv += ["-var", f"{name}={value}"]
        log_path = ctx.state.run_dir(ctx.run_id) / f"build-{image.name}.log"
        progress = Progress(ctx.console, f"packer build {image.name}")
        errors: list[str] = []

        def on_line(line: str) -> None:
            parsed = packer.MachineLine.parse(line)
            if parsed is None:
                return
            if parsed.error:
                errors.append(parsed.error)
            progress.update(parsed.step)

        try:
            ctx.runner.stream(
                [*argv, str(template)],
                on_line=on_line,
                log_path=log_path,
                env={**packer.PACKER_ENV, **ctx.target.packer_environment()},
                timeout=image.build_timeout,
                cwd=work,
                stop_grace=image.stop_grace,
            )
        except CommandFailed:
            reason = errors[-1].splitlines()[0] if errors else "see the log"
            raise StageFailed(
                "build",
                f"packer build failed after {duration(progress.elapsed)}: {reason}",
                hint=f"full log: {log_path}",
            ) from None
        ctx.console.line(f"    packer build {image.name} finished in {duration(progress.elapsed)}")
