"""What every stage of a run can see: the config, the target, history, the runner, and the outputs
of the stages before it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bake.config import Config, ImageConfig, ServiceConfig
from bake.console import Console
from bake.history import History
from bake.runner import Runner
from bake.state import StateDir

if TYPE_CHECKING:
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
    outputs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    stage: str = ""

    def record_resource(self, kind: str, resource_id: str) -> None:
        """Write down a cloud resource the moment it exists, before anything waits on it."""
        self.history.record_resource(self.run_id, self.stage, kind, resource_id)

    def require_image(self) -> ImageConfig:
        assert self.image is not None, f"stage {self.stage} needs an image"
        return self.image

    def require_service(self) -> ServiceConfig:
        assert self.service is not None, f"stage {self.stage} needs a service"
        return self.service
