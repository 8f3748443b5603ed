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


FLEET_SERVICE = """
[services.{name}]
image = "base"
capacity = 1
health_timeout = 30
soak = 0
"""


def test_fifty_services_roll_out_ten_at_a_time_and_one_failure_stops_no_other(
    tmp_path: Path, moto_endpoint, cloud, source_ami
) -> None:
    names = [f"svc{n:02d}" for n in range(50)]
    config_path = write_config(tmp_path, moto_endpoint)
    text = config_path.read_text()
    config_path.write_text(
        text[: text.index("[services.demo]")]
        + "".join(FLEET_SERVICE.format(name=name) for name in names)
    )
    fleet = make_app(config_path)
    seed.ensure_seeded(cloud, fleet.config, source_ami)
    fleet.run("bake", image="base")
    ami = images.published(cloud, "base")
    blue = {name: live_ami(fleet, name) for name in names}
    svc17_blue = autoscaling.find_group(cloud, "svc17-blue")
    elbv2 = cloud.client("elbv2")
    # svc17's listener is gone: its swap fails before it changes anything.
    (balancer,) = elbv2.describe_load_balancers(Names=["svc17"])["LoadBalancers"]
    (listener,) = elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    elbv2.delete_listener(ListenerArn=listener["ListenerArn"])

    argv = [sys.executable, "-m", "bake", "--config", str(config_path), "rollout", "--swap-only",
            "--all", "--parallel", "10", "--no-proof", "--json"]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    print(f"50 services, --parallel 10: {time.monotonic() - started:.1f} s")

    assert done.returncode == 1, done.stderr
    shown = json.loads(done.stdout)
    assert shown["result"] == "failed"
    actions = {s["name"]: s["action"] for s in shown["report"]["services"]}
    assert actions == {name: "failed" if name == "svc17" else "swapped" for name in names}
    failed = next(s for s in shown["report"]["services"] if s["name"] == "svc17")
    assert "no listener" in failed["error"]
    assert ami not in blue.values()
    assert {name: live_ami(fleet, name) for name in names if name != "svc17"} == {
        name: ami for name in names if name != "svc17"
    }
    assert autoscaling.find_group(cloud, "svc17-green") is None, "nothing was made for svc17"
    assert autoscaling.find_group(cloud, "svc17-blue") == svc17_blue
    swaps = [run for run in fleet.history.runs() if run.command == "swap"]
    assert len(swaps) == 49 and {run.status for run in swaps} == {"succeeded"}
    spans = [(run.started, run.finished or run.started) for run in swaps]
    together = [sum(start <= at < end for start, end in spans) for at, _ in spans]
    assert 1 < max(together) <= 10, "swaps ran side by side, at most ten at a time"
