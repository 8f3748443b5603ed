"""A RunContext on the local target with every outside effect behind the FakeRunner: no probe, no
cloud, no VM. Rendering, building and collecting still run the product's own code."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bake import config
from bake.console import Console
from bake.context import RunContext
from bake.history import History
from bake.records import SourceImage
from bake.state import StateDir
from bake.targets.local import LocalTarget
from tests.unit.fakes import FakeRunner

REPO = Path(__file__).resolve().parents[2]


class StubbedLocalTarget(LocalTarget):
    """The local target with its accelerator and key fixed and its base disk given."""

    accelerator = "tcg"
    keypair = (Path("/keys/id_ed25519"), Path("/keys/id_ed25519.pub"))
    source: SourceImage | None = None

    def apt_proxy(self, guest_host: str) -> str:
        return f"http://{guest_host}:3142/"

    def resolve_base(self, image: Any) -> SourceImage:
        assert self.source is not None, "set target.source first"
        return self.source


def make_context(
    tmp_path: Path,
    packer_version: str = "1.6.6",
    local: dict[str, Any] | None = None,
    **image_overrides: Any,
) -> RunContext:
    if not (tmp_path / "packer").exists():
        shutil.copytree(REPO / "packer", tmp_path / "packer")
    (tmp_path / "suites").mkdir(exist_ok=True)
    raw = {
        "images": {
            "base": {
                "base": "debian:bookworm",
                "steps": ["patch", "harden", "lineage"],
                "verify": ["suites"],
                **image_overrides,
            }
        },
        "local": local or {},
    }
    loaded = config.from_dict(raw, tmp_path / "bake.toml")
    state = StateDir(tmp_path / "state").ensure()
    history = History(state.history_db)
    runner = FakeRunner().on("packer", stdout=f"Packer v{packer_version}\n")
    console = Console(quiet=True)
    target = StubbedLocalTarget(loaded, state, history, runner, console)
    return RunContext(
        loaded, state, history, runner, target, console, run_id="r1", image=loaded.images["base"]
    )
