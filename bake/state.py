"""The layout of the state directory: one place that names every file the toolkit keeps."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateDir:
    root: Path

    def ensure(self) -> StateDir:
        for directory in (self.root, self.locks, self.logs, self.store, self.ssh, self.local):
            directory.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def history_db(self) -> Path:
        return self.root / "history.sqlite"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def store(self) -> Path:
        """The local image store: disk artifacts addressed by sha256."""
        return self.root / "images"

    @property
    def ssh(self) -> Path:
        return self.root / "ssh"

    @property
    def local(self) -> Path:
        """The local target's cloud: its address, pid and log."""
        return self.root / "local"

    def machine_logs(self, instance_id: str) -> Path:
        """What a local machine shipped (bake.local.logsink writes it): kept after the machine."""
        return self.local / "logs" / instance_id

    def rendered(self, image: str, target: str) -> Path:
        return self.root / "render" / image / f"{target}.pkr.hcl"

    def run_dir(self, run_id: str) -> Path:
        path = self.logs / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def scratch(self, name: str) -> Iterator[Path]:
        """Scratch space for a build or a machine, removed on every way out of the block."""
        path = self.root / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
