"""Shared fixtures: an in-process moto server, a reset cloud per test, configs and run contexts.

Everything a test writes goes under its tmp_path; the moto server lives for the session and is
reset (POST /moto-api/reset) before each test that asks for `cloud`.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from moto.elbv2.models import FakeHealthStatus, FakeTargetGroup
from moto.server import ThreadedMotoServer

from bake.aws.session import Cloud
from bake.config import Config, from_dict
from bake.console import Console
from bake.context import RunContext
from bake.history import History
from bake.local import motoserver
from bake.records import Record, Records, RunOptions
from bake.runner import Runner
from bake.state import StateDir

REGION = "us-east-1"

# Properties are checked for what they assert, not for how fast one example runs or is drawn:
# under `make test` every core is busy (a pytest-xdist worker each), and CI hosts are shared.
settings.register_profile("goldenbake", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("goldenbake")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """An in-process moto server on 127.0.0.1 and a free port, for the whole session."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    motoserver.mend_launch_template_versions()  # as the local cloud's server does
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def _session_cloud(moto_endpoint: str) -> Cloud:
    # boto3 sessions and clients take a few tenths of a second to build; build them once.
    return Cloud(REGION, endpoint_url=moto_endpoint)


@pytest.fixture
def cloud(moto_endpoint: str, _session_cloud: Cloud) -> Cloud:
    """A Cloud on the session's moto server, emptied for this test (its clients are shared)."""
    request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    _session_cloud.forget()
    return _session_cloud


@pytest.fixture
def register_ami(cloud: Cloud) -> Callable[[str], str]:
    """`register_ami(name)` registers an AMI on the moto server and gives its id."""

    def register(name: str) -> str:
        return cloud.client("ec2").register_image(
            Name=name, Architecture="x86_64", RootDeviceName="/dev/xvda"
        )["ImageId"]

    return register


@pytest.fixture
def base_ami(register_ami: Callable[[str], str]) -> str:
    """The AMI the local cloud is seeded with."""
    return register_ami("goldenbake-base-1")


@pytest.fixture
def make_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Config]:
    """Build a Config from a raw dict like bake.toml's; defaults to image `base`, service `demo`.

    `services` replaces the service table; any other keyword is merged into the `demo` service.
    """
    monkeypatch.delenv("BAKE_STATE_DIR", raising=False)
    verify = tmp_path / "serverspec_tests" / "base"
    verify.mkdir(parents=True, exist_ok=True)

    def make(services: dict[str, Any] | None = None, **demo: Any) -> Config:
        raw = {
            "target": "local",
            "state_dir": str(tmp_path / ".bake"),
            "images": {
                "base": {
                    "base": "debian:bookworm",
                    "steps": ["patch"],
                    "verify": ["serverspec_tests/base"],
                }
            },
            "services": services
            if services is not None
            else {
                "demo": {
                    "image": "base",
                    "capacity": 2,
                    "health_timeout": 2,
                    "shift_interval": 1,
                    "soak": 0,
                    **demo,
                }
            },
        }
        return from_dict(raw, tmp_path / "bake.toml")

    return make


class ShiftClock:
    """The shift stage's time, made up: sleeping advances it at once. `on_sleep(seconds)`, when
    set, runs at every sleep (to watch the weights, or to make trouble mid-shift)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.on_sleep: Callable[[float], None] | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(seconds)


@pytest.fixture(autouse=True)
def shift_clock(monkeypatch: pytest.MonkeyPatch) -> ShiftClock:
    """Every in-process shift and soak runs on made-up time."""
    from bake.stages import shift

    made_up = ShiftClock()
    monkeypatch.setattr(shift, "sleep", made_up.sleep)
    monkeypatch.setattr(shift, "clock", made_up.clock)
    return made_up


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


@dataclass
class StubTarget:
    """The part of a target the cloud stages use: a name and its boto3 clients."""

    cloud: Cloud
    name: str = "local"

    def prepare(self, machines: bool = True) -> None:
        """The test's cloud is already running."""


@pytest.fixture
def make_context(tmp_path: Path, config: Config, cloud: Cloud) -> Callable[..., RunContext]:
    """Build a RunContext with a real History and StateDir in tmp_path and a quiet console."""
    state = StateDir(tmp_path / ".bake").ensure()
    history = History(state.history_db)

    def make(
        service: str | None = "demo",
        *,
        config: Config = config,
        cloud: Cloud = cloud,
        records: tuple[Record, ...] = (),
        options: RunOptions | None = None,
        command: str = "swap",
    ) -> RunContext:
        return RunContext(
            config=config,
            state=state,
            history=history,
            runner=Runner(),
            target=StubTarget(cloud),  # type: ignore[arg-type]
            console=Console(quiet=True),
            run_id=history.start_run(command, service or "-", "local"),
            service=config.service(service) if service else None,
            records=Records(*records),
            options=options or RunOptions(),
        )

    return make


class TargetHealth:
    """Makes moto report the targets of chosen target groups unhealthy, in-process.

    moto always answers `healthy` (FakeTargetGroup.health_for); this wraps that function.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failing: dict[str, str] = {}
        self.answers_left: dict[str, int] = {}
        original = FakeTargetGroup.health_for
        failing, answers_left = self.failing, self.answers_left

        def health_for(group: FakeTargetGroup, target: dict[str, Any], ec2: Any) -> Any:
            status = original(group, target, ec2)
            if group.name in answers_left:
                answers_left[group.name] -= 1
                if answers_left[group.name] < 0:
                    failing.pop(group.name, None)
            if group.name in failing and status.status == "healthy":
                return FakeHealthStatus(
                    status.instance_id,
                    status.port,
                    status.health_check_port,
                    "unhealthy",
                    "Target.FailedHealthChecks",
                    failing[group.name],
                )
            return status

        monkeypatch.setattr(FakeTargetGroup, "health_for", health_for)

    def fail(self, target_group: str, description: str = "Health checks failed") -> None:
        self.failing[target_group] = description

    def heal(self, target_group: str) -> None:
        self.failing.pop(target_group, None)

    def fail_for(self, target_group: str, answers: int) -> None:
        """Unhealthy for the next `answers` target health answers, then healthy (a slow start)."""
        self.fail(target_group, "Target is still starting")
        self.answers_left[target_group] = answers


@pytest.fixture
def target_health(monkeypatch: pytest.MonkeyPatch) -> TargetHealth:
    """`target_health.fail("demo-green")` turns that target group's targets unhealthy."""
    return TargetHealth(monkeypatch)


def _run_stage(stage_class: type, ctx: RunContext) -> Any:
    """Run one stage as the pipeline does: name it on the context, keep its records."""
    ctx.stage = stage_class.name
    outcome = stage_class(ctx).run()
    for record in outcome.records:
        ctx.records.add(record)
    return outcome


@pytest.fixture
def run_stage() -> Callable[[type, RunContext], Any]:
    """`run_stage(StageClass, ctx)` runs a stage and adds its records to `ctx.records`."""
    return _run_stage
