"""`bake rollout` on the aws target against the moto server: the plan, a dry run that changes
nothing, a rollout that bakes and swaps, a second rollout with nothing to do, --swap-only, and a
failed service that does not stop the others."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bake.aws import autoscaling, images
from bake.campaigns.plan import Selection
from bake.campaigns.run import RolloutOptions, execute
from bake.errors import InputError
from bake.history import History
from bake.local import seed
from bake.report import read
from tests.integration.aws_project import make_app, write_config

TWO_SERVICES = """
[services.shop]
image = "base"
capacity = 1
health_timeout = 5
soak = 0
"""


@pytest.fixture
def app(tmp_path: Path, moto_endpoint, cloud, source_ami):
    config_path = write_config(tmp_path, moto_endpoint)
    config_path.write_text(config_path.read_text() + TWO_SERVICES)
    made = make_app(config_path)
    seed.ensure_seeded(cloud, made.config, source_ami)
    return made


def rollout(app, report: Path | None = None, dry_run: bool = False, **selection):
    options = RolloutOptions(
        Selection(**selection), parallel=2, proof=False, dry_run=dry_run, report_dir=report
    )
    return execute(app, options)


def live_ami(app, service: str) -> str | None:
    from bake import bluegreen

    state = bluegreen.describe(app.target.cloud, app.config.services[service])
    return state.live.ami if state.live else None


def test_a_rollout_needs_a_selection(app) -> None:
    with pytest.raises(InputError, match="needs images to roll out, --service NAME or --all"):
        rollout(app)
    with pytest.raises(InputError, match="unknown image 'nope'"):
        rollout(app, images=("nope",))


def test_a_dry_run_plans_everything_and_changes_nothing(app, tmp_path: Path) -> None:
    blue = {name: live_ami(app, name) for name in ("demo", "shop")}

    outcome = rollout(app, tmp_path / "report", all=True, dry_run=True)

    (base,) = outcome.plan.images
    assert base.stale and base.reasons == ("no verified AMI published yet",)
    assert [(s.name, s.action) for s in outcome.plan.services] == [
        ("demo", "swap after bake"),
        ("shop", "swap after bake"),
    ]
    assert images.published(app.target.cloud, "base") is None
    assert {name: live_ami(app, name) for name in blue} == blue
    assert app.history.runs() == [], "no run was started"
    assert not (tmp_path / "report").exists(), "a dry run writes no report"


def test_a_rollout_bakes_swaps_every_service_and_a_second_has_nothing_to_do(
    app, tmp_path: Path
) -> None:
    outcome = rollout(app, tmp_path / "report", all=True)

    assert outcome.report.result == "succeeded", outcome.report
    ami = images.published(app.target.cloud, "base")
    assert ami and [i.action for i in outcome.report.images] == ["baked"]
    assert {s.name: (s.action, s.new_ami) for s in outcome.report.services} == {
        "demo": ("swapped", ami),
        "shop": ("swapped", ami),
    }
    assert live_ami(app, "demo") == live_ami(app, "shop") == ami
    written = json.loads((tmp_path / "report" / "report.json").read_text())
    assert written["result"] == "succeeded"
    assert read(tmp_path / "report" / "report.json") == outcome.report
    stages = {(entry.subject, entry.stage) for entry in outcome.report.timeline}
    assert {("image base", "build"), ("service demo", "shift"), ("service shop", "shift")} <= stages

    runs = len(app.history.runs())
    started = time.monotonic()
    again = rollout(app, all=True)
    assert again.report.result == "nothing to do"
    assert again.plan.nothing_to_do and time.monotonic() - started < 10
    assert len(app.history.runs()) == runs, "nothing was built or swapped"


def test_swap_only_rolls_the_published_ami_out_to_services_behind(app) -> None:
    app.run("bake", image="base")
    ami = images.published(app.target.cloud, "base")

    outcome = rollout(app, swap_only=True, services=("shop",))

    assert [s.name for s in outcome.plan.swaps] == ["shop"]
    assert outcome.report.result == "succeeded"
    assert live_ami(app, "shop") == ami
    assert live_ami(app, "demo") != ami, "a service not selected is left alone"


def test_a_failed_service_does_not_stop_the_others(app, cloud) -> None:
    app.run("bake", image="base")
    ami = images.published(app.target.cloud, "base")
    blue_group = autoscaling.find_group(cloud, "demo-blue")
    # demo's listener is gone: its swap fails before it changes anything.
    listener_arn = cloud.client("elbv2").describe_listeners(
        LoadBalancerArn=cloud.client("elbv2").describe_load_balancers(Names=["demo"])[
            "LoadBalancers"
        ][0]["LoadBalancerArn"]
    )["Listeners"][0]["ListenerArn"]
    cloud.client("elbv2").delete_listener(ListenerArn=listener_arn)

    outcome = rollout(app, swap_only=True, all=True)

    assert outcome.report.result == "failed"
    results = {s.name: s for s in outcome.report.services}
    assert results["demo"].action == "failed" and "no listener" in results["demo"].error
    assert results["shop"].action == "swapped" and live_ami(app, "shop") == ami
    assert autoscaling.find_group(cloud, "demo-green") is None, "nothing was made for demo"
    assert autoscaling.find_group(cloud, "demo-blue") == blue_group


def test_a_stop_signal_to_the_rollout_stops_its_swaps_and_traffic_stays_on_blue(
    app, tmp_path: Path
) -> None:
    from bake import bluegreen

    config_path = app.config.path
    config_path.write_text(
        config_path.read_text().replace(
            "soak = 0\n", 'soak = 0\nshift_steps = [50, 100]\nshift_interval = "30s"\n', 1
        )
    )
    app.run("bake", image="base")
    argv = [sys.executable, "-m", "bake", "--config", str(config_path), "rollout",
            "--service", "demo", "--swap-only", "--no-proof"]  # fmt: skip
    rollout_process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    history = History(app.state.history_db)
    deadline = time.monotonic() + 120

    def shifting() -> bool:
        runs = [run for run in history.runs() if run.command == "swap"]
        return bool(runs) and any(
            s.name == "shift" and s.status == "running" for s in runs[0].stages
        )

    while not shifting():
        assert rollout_process.poll() is None, rollout_process.communicate()
        assert time.monotonic() < deadline, "the swap never reached its shift"
        time.sleep(0.2)
    time.sleep(1)  # inside the 30 s between the 50 % and the 100 % step
    rollout_process.send_signal(signal.SIGTERM)
    _, err = rollout_process.communicate(timeout=120)

    assert rollout_process.returncode == 128 + signal.SIGTERM, err
    (swap_run,) = [run for run in history.runs() if run.command == "swap"]
    assert swap_run.status == "cancelled", "the swap was stopped, and unwound as a cancelled run"
    state = bluegreen.describe(app.target.cloud, app.config.services["demo"])
    assert (state.weight("blue"), state.weight("green")) == (100, 0)
