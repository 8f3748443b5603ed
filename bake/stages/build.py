"""build: `packer build` of the rendered template, streaming progress and logging every line; the
artifact is taken from Packer's manifest, and the package lists the build took (of its source and of
the image) are recorded. A build whose inputs were already built is reused."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from bake import chef, freshness, inventory, packer
from bake.console import Progress, duration
from bake.errors import BakeError, CommandFailed, StageFailed
from bake.packages import Package, describe_updates, parse_dpkg_query
from bake.records import Built, Rendered, SourceImage
from bake.stages.base import Outcome, Stage
from bake.stages.render import render_image

DIGEST_VERSION = b"goldenbake-build-2"


def parse_dpkg_query_file(path: Path) -> list[Package]:
    return parse_dpkg_query(path.read_text(encoding="utf-8", errors="replace"))


def inputs_digest(rendered: Rendered, target: str) -> str:
    """The digest of the rendered template and every file it uses (scripts, cookbooks)."""
    digest = hashlib.sha256(DIGEST_VERSION)
    digest.update(f"\0target={target}\0".encode())
    digest.update(rendered.text.encode())
    for path in rendered.files:
        digest.update(f"\0file={path.name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_digest(inputs: str, source: SourceImage, archive_input: str) -> str:
    """The digest of everything that decides what a build produces: its inputs, its source, and
    the updates its patch step takes from the archive (by content, not by date: a nightly bake
    with nothing new in the archive reuses the last build)."""
    digest = hashlib.sha256(DIGEST_VERSION)
    digest.update(f"\0inputs={inputs}\0source={source.artifact or source.ami}\0".encode())
    digest.update(f"\0archive={archive_input}\0".encode())
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
        inputs = inputs_digest(rendered, ctx.target.name)
        source_packages = inventory.Inventory(ctx.history.path).packages(
            source.artifact, source.ami
        )
        plan = freshness.patch_plan(
            image, ctx.target.mirrors(), ctx.state, source_packages, ctx.console.line
        )
        archived = plan.digest_input
        digest = build_digest(inputs, source, archived)
        if not ctx.options.rebuild:
            for earlier in ctx.history.builds(image.name, digest):
                if ctx.target.still_exists(earlier.built()):
                    return Outcome.skipped(
                        f"inputs {digest[:12]} already built by run {earlier.run_id}",
                        earlier.built(),
                    )
        if plan.updates is not None:
            ctx.console.line(
                f"    {len(plan.updates)} updates to apply: {describe_updates(plan.updates, 3)}"
            )
        built = dataclasses.replace(
            self._packer_build(rendered, source, digest, plan), inputs_digest=inputs
        )
        ctx.history.record_build(ctx.run_id, built)
        if archived == freshness.SOURCE_UNKNOWN:
            self._alias_by_content(built, inputs, source)
        return Outcome.done(
            f"{built.ami or 'artifact ' + (built.artifact or '')[:12]} from {source.description}",
            built,
        )

    def _packer_build(
        self, rendered: Rendered, source: SourceImage, digest: str, plan: freshness.PatchPlan
    ) -> Built:
        ctx, image = self.ctx, self.ctx.require_image()
        with ctx.state.scratch(f"build-{image.name}-{ctx.run_id}") as work:
            manifest_path = work / "manifest.json"
            lists = work / "inventory"
            lists.mkdir()
            variables = {
                **source.variables,
                "source_ami": source.ami,
                "build_digest": digest,
                "run_id": ctx.run_id,
                "manifest_path": str(manifest_path),
                "inventory_directory": str(lists),
                **ctx.target.build_variables(work),
            }
            if package := chef.s3_package_url(image):
                variables["chef_package_url"] = ctx.target.chef_package_url(package)
            self._run_packer(rendered.path, variables, work)
            self._check_patched(lists / inventory.IMAGE_LIST, plan)
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            built = ctx.target.collect(manifest, image, digest, source)
            self._record_packages(built, source, lists)
        ctx.record_resource("ami" if built.ami else "artifact", built.ami or built.artifact or "")
        return built

    def _check_patched(self, image_list: Path, plan: freshness.PatchPlan) -> None:
        """An image with a patch step must leave the build with nothing pending: its package list
        against the archive's indexes, read on the host, before its disk or AMI is kept."""
        ctx, image = self.ctx, self.ctx.require_image()
        if not freshness.has_patch_step(image) or not image_list.is_file():
            return
        indexes = plan.indexes
        if indexes is None:
            suites = freshness.patch_suites(image, ctx.target.mirrors()) or []
            try:
                indexes = freshness.open_archive(ctx.state, suites, ctx.target.mirrors().keyring)
            except BakeError as exc:
                ctx.console.line(
                    f"    cannot check for updates left pending ({exc.message}); "
                    "the verification suites check the machine"
                )
                return
        pending = indexes.pending(parse_dpkg_query_file(image_list))
        if pending:
            raise StageFailed(
                "build",
                f"{len(pending)} updates still pending after the patch step: "
                f"{describe_updates(pending, 3)}",
                hint="see the build log; the archive may have changed during the build",
            )

    def _alias_by_content(self, built: Built, inputs: str, source: SourceImage) -> None:
        """A build named before its source's packages were known answers, from now on, to the
        digest its inputs have now that they are (else the next bake would build it again)."""
        ctx, image = self.ctx, self.ctx.require_image()
        source_packages = inventory.Inventory(ctx.history.path).packages(
            source.artifact, source.ami
        )
        if source_packages is None:
            return
        archived = freshness.patch_plan(
            image, ctx.target.mirrors(), ctx.state, source_packages, ctx.console.line
        ).digest_input
        ctx.history.alias_build(image.name, build_digest(inputs, source, archived), built.digest)

    def _record_packages(self, built: Built, source: SourceImage, lists: Path) -> None:
        """Keep the package lists the build downloaded: the image's under its disk or AMI, the
        source's under its own unless known already (a build without provisioners has none)."""
        ctx, image = self.ctx, self.ctx.require_image()
        known = inventory.Inventory(ctx.history.path)
        source_key = source.artifact or source.ami
        source_list = lists / inventory.SOURCE_LIST
        if source_list.is_file() and known.packages(source_key) is None:
            known.record(source_key, f"source of {image.name}", parse_dpkg_query_file(source_list))
        image_list = lists / inventory.IMAGE_LIST
        if image_list.is_file():
            packages = parse_dpkg_query_file(image_list)
            known.record(built.subject, image.name, packages)
            ctx.console.line(f"    {len(packages)} packages installed in {image.name}")

    def _run_packer(self, template: Path, variables: dict[str, str], work: Path) -> None:
        """`packer build` with these variables, its progress on the console, every line logged."""
        ctx, image = self.ctx, self.ctx.require_image()
        argv = ["packer", "build", "-machine-readable", "-color=false"]
        for name, value in sorted(variables.items()):
            argv += ["-var", f"{name}={value}"]
        log_path = ctx.state.run_dir(ctx.run_id) / f"build-{image.name}.log"
        progress = Progress(ctx.console, f"packer build {image.name}")
        doing = packer.StepProgress()
        errors: list[str] = []

        def on_line(line: str) -> None:
            parsed = packer.MachineLine.parse(line)
            if parsed is None:
                return
            if parsed.error:
                errors.append(parsed.error)
            progress.update(*doing.read(parsed))

        try:
            with progress:
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
