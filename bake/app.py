"""Wiring: one App per invocation builds the config, state, history, runner and target, lazily, so
that a command that fails on bad input has touched nothing."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path

from bake import config as config_module
from bake import pipeline
from bake.config import Config
from bake.console import Console
from bake.context import RunContext
from bake.errors import ConfigError
from bake.history import History, new_run_id
from bake.leases import FileLocks, Holder, LeaseLocks
from bake.records import RunOptions
from bake.recover import Recoverer, abandoned
from bake.runner import Runner
from bake.state import StateDir
from bake.targets.base import Target


def _local_target() -> type[Target]:
    from bake.targets.local import LocalTarget

    return LocalTarget


def _aws_target() -> type[Target]:
    from bake.targets.aws import AwsTarget

    return AwsTarget


# An explicit registry of targets: the name in bake.toml -> the class that implements it (imported
# when first used, so that commands that need no target stay quick).
TARGETS: dict[str, Callable[[], type[Target]]] = {"local": _local_target, "aws": _aws_target}

# Commands that build an image, and so need its parents' verified AMIs first.
BUILDS = ("build", "bake-and-swap")


class App:
    def __init__(
        self,
        config_path: Path | None = None,
        *,
        json_output: bool = False,
        debug: bool = False,
        runner: Runner | None = None,
        console: Console | None = None,
    ) -> None:
        self.config_path = config_path
        self.json_output = json_output
        self.debug = debug
        self.runner = runner or Runner()
        self.console = console or Console()

    @cached_property
    def config(self) -> Config:
        return config_module.load(self.config_path)

    @cached_property
    def state(self) -> StateDir:
        return StateDir(config_module.state_dir(self.config)).ensure()

    @cached_property
    def history(self) -> History:
        return History(self.state.history_db)

    @cached_property
    def target(self) -> Target:
        try:
            factory = TARGETS[self.config.target]
        except KeyError:
            raise ConfigError(
                f"{self.config.path}: unknown target '{self.config.target}'",
                hint=f"known targets: {', '.join(sorted(TARGETS))}",
            ) from None
        return factory()(self.config, self.state, self.history, self.runner, self.console)

    def context(
        self,
        *,
        image: str | None = None,
        service: str | None = None,
        options: RunOptions | None = None,
    ) -> RunContext:
        service_config = self.config.service(service) if service else None
        image_name = image or (service_config.image if service_config else None)
        image_config = self.config.image(image_name) if image_name else None
        return RunContext(
            config=self.config,
            state=self.state,
            history=self.history,
            runner=self.runner,
            target=self.target,
            console=self.console,
            image=image_config,
            service=service_config,
            options=options or RunOptions(),
        )

    def run(
        self,
        command: str,
        *,
        image: str | None = None,
        service: str | None = None,
        options: RunOptions | None = None,
        run_id: str = "",
    ) -> pipeline.RunResult:
        """Run a pipeline command under the locks of what it changes; a command that builds an
        image first bakes each of its parents that has no verified AMI yet."""
        if command in BUILDS:
            self.bake_parents(image or self.config.service(service or "").image)
        ctx = self.context(image=image, service=service, options=options)
        ctx.run_id = run_id or new_run_id()
        holder = Holder.this_run(command, ctx.run_id)
        with self.locks.hold_all(pipeline.lock_names(ctx, command), holder):
            subjects = {name for name in (image, service, ctx.image and ctx.image.name) if name}
            self.recover_runs_of(subjects)
            return pipeline.execute(ctx, command)

    def bake_parents(self, name: str) -> None:
        """Bake (build, verify, register) each parent of image `name`, root first, that has no
        verified AMI published, so that a layered image can be built on a fresh target."""
        from bake.aws import images

        parents: list[str] = []
        spec = self.config.image(name).base_for(self.config.target)
        while spec.kind == "image":
            parents.insert(0, spec.value)
            spec = self.config.images[spec.value].base_for(self.config.target)
        if not parents:
            return
        self.target.prepare(machines=False)
        for parent in parents:
            if images.published(self.target.cloud, parent) is None:
                self.console.line(f"image {parent} has no verified AMI yet; baking it first")
                self.run("bake", image=parent)

    @cached_property
    def recoverer(self) -> Recoverer:
        return Recoverer(lambda: self.target.cloud, self.history, self.state)

    def recover_runs_of(self, subjects: set[str]) -> None:
        """Release what earlier runs of these images or services left when they died."""
        runs = [run for run in abandoned(self.history) if run.subject in subjects]
        if not runs:
            return
        recovery = self.recoverer.recover(runs)
        for action in recovery.released:
            self.console.line(f"    recovered {action.kind} {action.id} of run {action.run_id}")
        for action in recovery.left:
            self.console.line(
                f"    left {action.kind} {action.id} of run {action.run_id}: {action.outcome}"
            )

    @cached_property
    def locks(self) -> FileLocks | LeaseLocks:
        """A lease in the account's lock table when one is configured, else this machine's flock."""
        table = self.config.aws.lock_table if self.config.target == "aws" else None
        if table:
            return LeaseLocks(self.target.cloud, table)
        return FileLocks(self.state.locks)
