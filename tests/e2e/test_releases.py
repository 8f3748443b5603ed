"""Releases on the local target's data plane: `bake release` ships the application to `demo`'s
machines (the `web` image, whose pull-deploy step installs the release at boot), measured with
HTTP load through the service's URL: two releases in a row with no failed request, a corrupted
release that never gets traffic, a rollback to the previous release; and the logs of machines
a swap terminated, found on the host (the web image's ship-logs step).

The tests run in file order and build on each other, after tests/e2e/test_pipeline.py left demo
live on a `web` AMI (they bake it themselves when run alone).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bake.polling import wait_until
from tests.e2e.load import Load, answered_by_one_colour_then_the_other
from tests.e2e.project import Project, variant

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def sent() -> dict[str, str]:
    """Requests that carried a token: token -> the instance that answered it."""
    return {}


@pytest.fixture(scope="module")
def live(project: Project) -> dict[str, Any]:
    """demo, live on the `web` image (already, after test_pipeline.py)."""
    return project.ok("--json", "bake-and-swap", "demo").json


def application(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "index.html").write_text(f"<h1>demo {version}</h1>\n")
    (folder / "version.txt").write_text(f"{version}\n")
    return folder


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def released_under_load(project: Project, folder: Path, version: str) -> tuple[dict, Load]:
    with Load(project.url(), rate=20, seconds=1200) as load:
        result = project.ok("--json", "release", "demo", str(folder), "--version", version).json
        time.sleep(3)
    return result, load


def check_moved(load: Load, before: set[str], after: set[str], version: str) -> None:
    print(f"release {version}:", end=" ")
    answered_by_one_colour_then_the_other(load, before, after)
    assert {answer.release for answer in load.in_order()[-10:]} == {version}


def ssh_read(project: Project, machine: dict[str, Any], path: str) -> str:
    key = project.state / "ssh" / "id_ed25519"
    done = subprocess.run(
        ["ssh", "-F", str(project.state / "ssh" / "ssh_config"), "-i", str(key),
         "-p", str(machine["ssh_port"]), "root@127.0.0.1", f"cat {path}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.stdout


def test_two_releases_in_a_row_move_the_traffic_with_no_failed_request(
    project: Project, live: dict[str, Any], tmp_path: Path, sent: dict[str, str]
) -> None:
    ami = project.status()["live"]["ami"]
    old = project.ids(project.status()["live"]["color"])

    first, load = released_under_load(project, application(tmp_path / "one", "1.0"), "1.0")
    new = project.ids(first["live_color"])
    check_moved(load, old, new, "1.0")
    assert (first["ami"], first["live_release"]) == (ami, "1.0"), "the same AMI, a new release"
    assert fetch(project.url() + "app/version.txt") == "1.0\n"
    token = f"t-{secrets.token_hex(4)}"
    for number in range(12):
        answered = json.loads(fetch(f"{project.url()}?token={token}-{number}"))
        sent[f"{token}-{number}"] = answered["instance_id"]
    assert set(sent.values()) <= new

    second, load = released_under_load(project, application(tmp_path / "two", "2.0"), "2.0")
    check_moved(load, new, project.ids(second["live_color"]), "2.0")
    assert second["live_color"] != first["live_color"] and second["ami"] == ami
    assert fetch(project.url() + "app/index.html") == "<h1>demo 2.0</h1>\n"
    status = project.status()
    assert (status["live"]["release"], status["standby"]["release"]) == ("2.0", "1.0")
    assert (status["rollout"]["release"], status["rollout"]["rollback_release"]) == ("2.0", "1.0")
    for machine in project.machines_up(second["live_color"]):
        installed = json.loads(ssh_read(project, machine, "/run/bake/release.json"))
        assert installed["release"] == "2.0"
    listed = project.ok("--json", "history", "--releases", "--service", "demo").json
    assert [entry["version"] for entry in listed][:2] == ["2.0", "1.0"]


def test_a_corrupted_release_never_gets_traffic(project: Project, tmp_path: Path) -> None:
    config = variant(tmp_path, ('health_timeout = "10m"', 'health_timeout = "150s"'))
    before = project.status()
    folder = application(tmp_path / "three", "3.0")
    stored = project.ok("--json", "release", "demo", str(folder), "--version", "3.0", "--no-swap")
    bucket, _, key = stored.json["release"]["location"].removeprefix("s3://").partition("/")
    s3 = project.aws("s3")
    held = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    s3.put_object(Bucket=bucket, Key=key, Body=b"not the release", Metadata=held)  # tampered

    with Load(project.url(), rate=10, seconds=900) as load:
        result = project.bake("release", "demo", str(folder), "--version", "3.0", config=config)
    assert result.code == 1, result.err[-3000:]
    assert "is not healthy" in result.err.strip().splitlines()[-1]
    assert load.failures() == [], "the live colour kept serving"
    assert {answer.release for answer in load.in_order()} == {"2.0"}
    status = project.status()
    assert (status["live"]["color"], status["live"]["release"]) == (
        before["live"]["color"],
        "2.0",
    )
    assert status["rollout"]["state"] == "failed"
    record = project.local()
    assert record["running"]


def test_the_logs_of_the_machines_a_swap_terminated_are_on_the_host(
    project: Project, sent: dict[str, str]
) -> None:
    """The colour that served the tokens was emptied for the corrupted release: its machines are
    gone, and each request's line is in the log of the machine that answered it."""
    assert sent, "no request carried a token"
    running = {machine["instance_id"] for machine in project.machines()}
    for token, instance in sorted(sent.items()):
        assert instance not in running, f"{instance} still runs"
        shipped = project.state / "local" / "logs" / instance / "messages.log"
        lines = [line for line in shipped.read_text().splitlines() if f"token={token} " in line]
        assert len(lines) == 1, f"{token} in {shipped}: {lines}"
        assert "/var/log/nginx/access.log:" in lines[0] and '" 200 ' in lines[0]


def test_a_rollback_returns_to_the_previous_release(project: Project) -> None:
    standby = project.status()["standby"]["color"]
    assert wait_until(lambda: project.status()["standby"]["healthy"] == 2, 300, interval=5), (
        f"{standby} did not come back after the corrupted release"
    )
    live = project.ids(project.status()["live"]["color"])
    with Load(project.url(), rate=20, seconds=600) as load:
        time.sleep(3)
        back = project.ok("--json", "rollback", "demo").json
        time.sleep(3)
    assert (back["live_color"], back["live_release"]) == (standby, "1.0")
    check_moved(load, live, project.ids(standby), "1.0")
    assert fetch(project.url() + "app/version.txt") == "1.0\n"
