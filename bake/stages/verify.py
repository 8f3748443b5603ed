"""verify: boot a fresh machine from the built image (never the build machine), run the image's
testinfra suites against it over SSH, write JUnit XML.

A failure tags the AMI unverified and stops the run.
"""

from __future__ import annotations

import hashlib
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

from bake import ssh
from bake.aws import images
from bake.context import RunContext
from bake.errors import StageFailed
from bake.records import Built, Verification
from bake.ssh import SshHost
from bake.stages.base import Outcome, Stage


@dataclass(frozen=True)
class Report:
    tests: int
    failures: int
    errors: int
    failed: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.tests > 0 and self.failures == 0 and self.errors == 0

    def summary(self) -> str:
        return f"{self.tests} checks, {self.failures} failed, {self.errors} errors"


def read_junit(path: Path) -> Report:
    if not path.is_file():
        return Report(0, 0, 1, ("no JUnit report was written",))
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = sum(int(suite.get("tests", 0)) for suite in suites)
    failures = sum(int(suite.get("failures", 0)) for suite in suites)
    errors = sum(int(suite.get("errors", 0)) for suite in suites)
    failed = tuple(
        f"{case.get('classname', '')}::{case.get('name', '')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    )
    return Report(tests, failures, errors, failed)


def suite_files(ctx: RunContext) -> list[Path]:
    """Every file of the image's suites, including the conftest.py files beside them."""
    files: set[Path] = set()
    for entry in ctx.require_image().verify:
        path = entry if entry.is_absolute() else ctx.config.root / entry
        files.update(p for p in ([path] if path.is_file() else path.rglob("*.py")) if p.is_file())
        for parent in path.parents:
            if (parent / "conftest.py").is_file():
                files.add(parent / "conftest.py")
            if parent == ctx.config.root:
                break
    return sorted(files)


def suites_digest(files: list[Path]) -> str:
    digest = hashlib.sha256(b"goldenbake-suites-1")
    for path in files:
        digest.update(f"\0{path}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def latest_build(ctx: RunContext) -> Built:
    """The build this run made, or the newest one in history when verify runs alone."""
    image = ctx.require_image()
    built = ctx.records.get(Built)
    if built is not None:
        return built
    for row in ctx.history.builds(image.name):
        if ctx.target.still_exists(row.built()):
            return row.built()
    raise StageFailed(
        ctx.stage, f"image {image.name} has no build to use", hint=f"run bake build {image.name}"
    )


class Verify(Stage):
    name = "verify"

    def run(self) -> Outcome:
        ctx, image = self.ctx, self.ctx.require_image()
        built = latest_build(ctx)
        digest = suites_digest(suite_files(ctx))
        earlier = ctx.history.verification(built.subject, digest)
        if earlier and earlier.passed and not ctx.options.reverify:
            return Outcome.skipped(
                f"already passed these suites in run {earlier.run_id}",
                Verification(built, earlier.kernel, earlier.junit),
            )
        junit = ctx.state.run_dir(ctx.run_id) / f"verify-{image.name}.xml"
        with ctx.target.machine(
            built,
            image,
            run_id=ctx.run_id,
            record=ctx.record_resource,
            instance_profile=ctx.service.instance_profile if ctx.service else None,
        ) as host:
            self._run_suites(host, built, junit)
            kernel = ssh.run(ctx.runner, host, "uname -r", timeout=60).stdout.strip()
        report = read_junit(junit)
        ctx.history.record_verification(
            ctx.run_id,
            image.name,
            built.subject,
            digest,
            report.passed,
            kernel,
            junit,
            report.summary(),
        )
        if not report.passed:
            self._tag_unverified(built, kernel)
            failed = ", ".join(report.failed[:3]) + (" ..." if len(report.failed) > 3 else "")
            raise StageFailed(
                "verify",
                f"{report.summary()} ({failed}); the image is tagged bake:verified=false "
                "and nothing was published",
                hint=f"JUnit report: {junit}",
            )
        return Outcome.done(
            f"{report.summary()} on kernel {kernel}", Verification(built, kernel, str(junit))
        )

    def _run_suites(self, host: SshHost, built: Built, junit: Path) -> None:
        ctx, image = self.ctx, self.ctx.require_image()
        ini = junit.with_suffix(".ini")
        ini.write_text("[pytest]\njunit_family = xunit2\n", encoding="utf-8")
        paths = [str(p if p.is_absolute() else ctx.config.root / p) for p in image.verify]
        ctx.console.line(f"    running {len(paths)} suite(s) on {host.host}:{host.port}")
        ctx.runner.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-c",
                str(ini),
                "--rootdir",
                str(ctx.config.root),
                "-p",
                "no:cacheprovider",
                "-q",
                f"--hosts={host.testinfra_url()}",
                f"--junitxml={junit}",
                *paths,
            ],
            check=False,
            timeout=image.verify_timeout,
            cwd=ctx.config.root,
            env={
                "PYTHONDONTWRITEBYTECODE": "1",
                "BAKE_EXPECT_IMAGE": image.name,
                "BAKE_EXPECT_DIGEST": built.digest,
                "BAKE_EXPECT_SOURCE_AMI": built.source_ami,
                # the archive's signed indexes the host keeps, for the suites' package checks
                "BAKE_STATE_DIR": str(ctx.state.root),
                "BAKE_ARCHIVE_KEYRING": str(ctx.target.mirrors().keyring),
                **ctx.target.suite_environment(),
            },
        )

    def _tag_unverified(self, built: Built, kernel: str) -> None:
        ctx = self.ctx
        ami = ctx.target.ensure_ami(built)
        ctx.history.set_run_ami(ctx.run_id, ami)
        images.tag_lineage(
            ctx.target.cloud, ami, built, verified=False, kernel=kernel, run_id=ctx.run_id
        )
