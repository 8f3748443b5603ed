"""A real supervisor (its own process, a real HAProxy) on the test's moto server, told to follow a
config that adds a service: it does so in place, and the frontend of the service it already served
accepts every connection throughout. No machines boot: the services are not seeded."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bake import config as config_module
from bake.local import dataplane
from bake.runner import Runner
from bake.state import StateDir

SERVICE = """
[services.{name}]
image = "base"
capacity = 1
"""


def write_config(directory: Path, state: Path, *services: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "suites").mkdir(exist_ok=True)
    path = directory / "bake.toml"
    path.write_text(
        f'state_dir = "{state}"\n\n[local]\naccelerator = "tcg"\n\n'
        '[images.base]\nbase = "debian:bookworm"\nsteps = []\nverify = ["suites"]\n'
        + "".join(SERVICE.format(name=name) for name in services)
    )
    return path


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDir]:
    made = StateDir(tmp_path / "state").ensure()
    yield made
    dataplane.stop_supervisor(made)


class Knocker(threading.Thread):
    """Connects to a port again and again until stopped, and counts the connections refused."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.done = threading.Event()
        self.tries = 0
        self.refused = 0

    def run(self) -> None:
        while not self.done.is_set():
            self.tries += 1
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
            except OSError:
                self.refused += 1
            time.sleep(0.005)


def answers(url: str) -> int:
    """The HTTP status the frontend answers with (503: it has no server yet)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_supervisor_follows_an_added_service_without_refusing_a_connection(
    tmp_path: Path, cloud, state: StateDir
) -> None:
    demo = config_module.load(write_config(tmp_path / "one", state.root, "demo"))
    fleet = config_module.load(write_config(tmp_path / "fleet", state.root, "demo", "shop"))
    endpoint = cloud.endpoint_url or ""
    lines: list[str] = []

    first = dataplane.up(Runner(), state, demo, endpoint, lines.append)
    before = dataplane.status(state)["services"]
    demo_url = before["demo"]["url"]
    assert answers(demo_url) == 503
    knocker = Knocker(before["demo"]["port"])
    knocker.start()
    time.sleep(0.5)

    followed = dataplane.up(Runner(), state, fleet, endpoint, lines.append)
    time.sleep(2)  # HAProxy's old worker has finished by now: still no refusal
    knocker.done.set()
    knocker.join()

    after = dataplane.status(state)
    assert followed["pid"] == first["pid"], "the supervisor was not restarted"
    assert after["running"] and set(after["services"]) == {"demo", "shop"}
    assert after["services"]["demo"]["url"] == demo_url
    assert answers(after["services"]["shop"]["url"]) == 503
    assert knocker.tries > 100 and knocker.refused == 0
    assert not [line for line in lines if "restarting" in line]
    log = (state.local / "supervisor.log").read_text()
    assert f"following {fleet.path}" in log

    dataplane.up(Runner(), state, demo, endpoint)
    assert dataplane.running(state)["pid"] == first["pid"]
    assert set(dataplane.status(state)["services"]) == {"demo"}
