"""A command that builds a layered image first bakes each parent that has no verified AMI yet,
root first, each in a run of its own; a published parent is used as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from bake.app import App
from bake.aws import images
from bake.console import Console
from tests.conftest import StubTarget

CONFIG = """
[local]
machines = false

[images.base]
base = "debian:bookworm"
steps = ["patch"]
verify = ["suites"]

[images.mid]
base = "image:base"
steps = ["harden"]
verify = ["suites"]

[images.top]
base = "image:mid"
steps = ["lineage"]
verify = ["suites"]

[services.demo]
image = "top"
capacity = 1
"""


class RecordingApp(App):
    """An App whose pipeline runs are recorded, not run."""

    def __init__(self, config_path: Path, cloud) -> None:
        super().__init__(config_path, console=Console(quiet=True))
        self.ran: list[tuple[str, str | None, str | None]] = []
        self.__dict__["target"] = StubTarget(cloud)

    def run(self, command, *, image=None, service=None, options=None):  # type: ignore[override]
        if command == "bake":
            self.ran.append((command, image, service))
            images.publish(self.target.cloud, image, f"ami-{image}")
            return None
        return super().run(command, image=image, service=service, options=options)


@pytest.fixture
def app(tmp_path: Path, cloud, monkeypatch: pytest.MonkeyPatch) -> RecordingApp:
    monkeypatch.delenv("BAKE_STATE_DIR", raising=False)
    (tmp_path / "suites").mkdir()
    (tmp_path / "bake.toml").write_text(CONFIG)
    return RecordingApp(tmp_path / "bake.toml", cloud)


def test_every_unpublished_parent_is_baked_root_first(app) -> None:
    app.bake_parents("top")
    assert app.ran == [("bake", "base", None), ("bake", "mid", None)]


def test_a_published_parent_is_not_baked_again(app, cloud) -> None:
    images.publish(cloud, "base", "ami-0base")
    app.bake_parents("top")
    assert app.ran == [("bake", "mid", None)]
    app.ran.clear()
    app.bake_parents("top")
    assert app.ran == []


def test_an_image_without_parents_bakes_nothing(app) -> None:
    app.bake_parents("base")
    assert app.ran == []


def test_the_bake_sequence_is_an_images_whole_bake() -> None:
    from bake import pipeline

    assert pipeline.SEQUENCES["bake"] == ["render", "prepare", "build", "verify", "register"]
