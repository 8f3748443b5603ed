"""What every stage of a run can see: the config, the target, history, the runner, the options the
command line gave, and the records of the stages before it."""

from __future__ import annotations

from dataclasses import dataclass, field

from bake.config import Config, ImageConfig, ServiceConfig
from bake.console import Console
from bake.errors import BakeError
from bake.history import History
from bake.records import Records, RunOptions
from bake.runner import Runner
from bake.state import StateDir
from bake.targets.base import Target


@dataclass
class RunContext:
    config: Config
    state: StateDir
    history: History
    runner: Runner
    target: Target
    console: Console
    run_id: str = ""
    command: str = ""
    image: ImageConfig | None = None
    service: ServiceConfig | None = None
    records: Records = field(default_factory=Records)
    options: RunOptions = field(default_factory=RunOptions)
    stage: str = ""

    def record_resource(self, kind: str, resource_id: str) -> None:
        """Write down a cloud resource the moment it exists, before anything waits on it."""
        self.history.record_resource(self.run_id, self.stage, kind, resource_id)

    def require_image(self) -> ImageConfig:
        if self.image is None:
            raise BakeError(f"stage {self.stage} needs an image")
        return self.image

    def require_service(self) -> ServiceConfig:
        if self.service is None:
            raise BakeError(f"stage {self.stage} needs a service")
        return self.service
