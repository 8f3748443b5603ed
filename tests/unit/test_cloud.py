"""The local cloud's lifecycle against a real moto server process."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from bake import localhost
from bake.errors import BakeError
from bake.local import cloud as local_cloud
from bake.runner import Runner
from bake.state import StateDir


@pytest.fixture
def state(tmp_path):
    state = StateDir(tmp_path / ".bake").ensure()
    yield state
    local_cloud.down(state)  # never leave a server behind, whatever the test did


def _dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not localhost.pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_status_without_a_cloud_is_not_running(state):
    assert local_cloud.status(state) == {
        "running": False,
        "endpoint": None,
        "region": None,
        "pid": None,
        "port": None,
        "started": None,
        "log": str(state.local / "moto.log"),
    }
    assert local_cloud.down(state) is False


def test_status_with_an_unreadable_record_is_not_running(state):
    (state.local / "cloud.json").write_text("{not json", encoding="utf-8")

    assert local_cloud.status(state)["running"] is False
    assert local_cloud.down(state) is False
    assert not (state.local / "cloud.json").exists()


def test_up_status_reuse_and_down(state):
    cloud = local_cloud.up(Runner(), state, "eu-west-1")

    assert cloud.endpoint == f"http://127.0.0.1:{cloud.port}"
    recorded = json.loads((state.local / "cloud.json").read_text())
    assert recorded == {
        "endpoint": cloud.endpoint,
        "pid": cloud.pid,
        "port": cloud.port,
        "region": "eu-west-1",
        "started": cloud.started,
    }
    status = local_cloud.status(state)
    assert (status["running"], status["endpoint"], status["pid"], status["region"]) == (
        True,
        cloud.endpoint,
        cloud.pid,
        "eu-west-1",
    )
    boto = cloud.cloud()
    assert (boto.region, boto.endpoint_url) == ("eu-west-1", cloud.endpoint)
    assert (
        boto.client("ec2")
        .describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
        .startswith("eu-west-1")
    )

    again = local_cloud.up(Runner(), state, "eu-west-1")
    assert (again.pid, again.endpoint) == (cloud.pid, cloud.endpoint)

    assert local_cloud.down(state) is True
    assert _dead(cloud.pid)
    assert not (state.local / "cloud.json").exists()
    assert local_cloud.status(state)["running"] is False
    assert (state.local / "moto.log").exists()


def test_status_after_the_server_was_killed_elsewhere(state):
    cloud = local_cloud.up(Runner(), state, "us-east-1")
    os.kill(cloud.pid, signal.SIGKILL)
    assert _dead(cloud.pid)

    status = local_cloud.status(state)

    assert (status["running"], status["endpoint"], status["pid"]) == (False, None, None)
    restarted = local_cloud.up(Runner(), state, "us-east-1")
    assert restarted.pid != cloud.pid
    assert local_cloud.status(state)["running"] is True
    assert local_cloud.down(state) is True


def test_up_refuses_a_port_something_else_answers_on(state, moto_endpoint):
    port = int(moto_endpoint.rsplit(":", 1)[1])

    with pytest.raises(BakeError, match="something already answers"):
        local_cloud.up(Runner(), state, "us-east-1", port=port)

    assert local_cloud.status(state)["running"] is False
