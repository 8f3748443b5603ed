"""`bake rollout` on the local target with two images (`base`, and `web` on it) and two services
(`demo`, and `shop` added here): a rebuild of base cascades to web and to both services while
demo serves HTTP load (no request fails, traffic moves to the rebuilt image), every instance is
proven over SSH, the report opens in a real browser, the webhook hears of it, and a second
rollout has nothing to do. Then, with both colours of demo serving, a rollback under load, and a
machine killed halfway through a shift, which sends traffic back. Runs after test_pipeline.py
and test_releases.py, on the images they baked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from debian.debian_support import version_compare

from bake.archive import Archive, suites_for
from bake.polling import wait_until
from tests.e2e.load import Load, answered_by_one_colour_then_the_other
from tests.e2e.project import REPO, Project, Result, variant

pytestmark = pytest.mark.vm

SHOP = """
[services.shop]
image = "web"
capacity = 1
health_timeout = "10m"
soak = "0s"
"""


class Hook(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HookHandler)
        self.messages: list[str] = []


class HookHandler(BaseHTTPRequestHandler):
    server: Hook

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.messages.append(json.loads(body)["text"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hook() -> Iterator[Hook]:
    server = Hook()
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fleet(project: Project, hook: Hook, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped config with a second service on `web` and a webhook to tell."""
    project.ok("bake-and-swap", "demo")  # what test_pipeline left, or bake it now
    config = variant(tmp_path_factory.mktemp("fleet"))
    url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    config.write_text(f'{config.read_text()}\n[notify]\nwebhook = "{url}"\n{SHOP}')
    return config


def newest_kernel(project: Project) -> str:
    """The newest linux-image-cloud-amd64 the archive has, as the rollout's planner reads it."""
    suites = suites_for(
        "bookworm", "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"
    )
    archive = Archive(suites, project.state / "archive")
    archive.refresh()
    newest = archive.candidate("linux-image-cloud-amd64", "amd64")
    assert newest is not None
    return newest.version


@pytest.fixture(scope="module")
def cascade(project: Project, fleet: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The rollout, with HTTP load on demo from the moment its swap starts (the swap's log
    appears) until the rollout has ended: the builds before it run on a quiet host."""
    report = tmp_path_factory.mktemp("report")
    required = newest_kernel(project)
    before = project.status()  # as test_pipeline.py left it: demo alone, shop not yet seeded
    old = project.ids(before["live"]["color"])
    url = project.url()
    argv = (
        "--json", "rollout", "--all", "--rebuild", "base", "--parallel", "2",
        "--require-kernel", required, "--report", str(report),
    )  # fmt: skip
    ended: list[Result] = []
    rollout = threading.Thread(
        target=lambda: ended.append(project.bake(*argv, config=fleet)), name="rollout"
    )
    rollout.start()
    wait_until(lambda: (report / "swap-demo.log").exists() or not rollout.is_alive(), 3600, 1)
    with Load(url, rate=20, seconds=1800) as load:
        rollout.join()
        time.sleep(3)
    (result,) = ended
    assert result.code == 0, failed_rollout(project, report, result.err)
    return {"out": result.json, "report": report, "required": required, "load": load,
            "before": before, "old": old}  # fmt: skip


def failed_rollout(project: Project, report: Path, err: str) -> str:
    """What a failed rollout leaves to read: its error, each swap's log, the data plane's log."""
    parts = [err[-3000:]]
    for log in sorted(report.glob("swap-*.log")):
        parts.append(f"--- {log.name}\n{log.read_text()[-3000:]}")
    supervisor = project.state / "local" / "supervisor.log"
    if supervisor.exists():
        parts.append(f"--- {supervisor.name}\n{supervisor.read_text()[-4000:]}")
    return "\n".join(parts)


def test_a_rebuilt_base_cascades_to_web_and_to_both_services(project, cascade) -> None:
    report = cascade["out"]["report"]
    assert report["result"] == "succeeded"
    images = {image["name"]: image for image in report["images"]}
    assert images["base"]["action"] == "baked"
    assert "a rebuild was asked for" in images["base"]["reasons"]
    assert images["web"]["action"] == "baked"
    assert "its base base is baked again" in images["web"]["reasons"]
    assert images["base"]["new_ami"] != images["base"]["old_ami"]
    web = images["web"]["new_ami"]
    services = services_of(cascade)
    assert {name: s["action"] for name, s in services.items()} == {
        "demo": "swapped",
        "shop": "swapped",
    }
    assert {s["new_ami"] for s in services.values()} == {web}
    for machine in project.machines(service="shop"):
        if machine["state"] == "running" and machine["color"] == services["shop"]["live_color"]:
            assert machine["ami"] == web


def test_demo_moved_to_the_rebuilt_image_under_load_with_no_failed_request(
    project, fleet, cascade
) -> None:
    demo = services_of(cascade)["demo"]
    before = cascade["before"]
    assert demo["live_color"] != before["live"]["color"]
    assert demo["old_ami"] == before["live"]["ami"] != demo["new_ami"]
    assert {machine["ami"] for machine in project.machines(demo["live_color"])} == {demo["new_ami"]}
    load = cascade["load"]
    answered_by_one_colour_then_the_other(load, cascade["old"], project.ids(demo["live_color"]))
    assert {answer.ami for answer in load.in_order()[-10:]} == {demo["new_ami"]}
    status = project.status(fleet)
    assert (status["live"]["color"], status["live"]["healthy"]) == (demo["live_color"], 2)
    assert (status["standby"]["color"], status["standby"]["healthy"]) == (
        before["live"]["color"],
        2,
    ), "the colour that served before the rollout is kept warm for a rollback"


def test_every_instance_of_both_services_is_proven_to_run_the_new_kernel(project, cascade) -> None:
    services = services_of(cascade)
    tags = tags_of(project, services["demo"]["new_ami"])
    for name, count in (("demo", 2), ("shop", 1)):
        instances = services[name]["instances"]
        assert services[name]["verdict"] == "proven", instances
        assert len(instances) == count
        live = {m["instance_id"] for m in project.machines(services[name]["live_color"], name)}
        assert {instance["instance_id"] for instance in instances} <= live
        for instance in instances:
            assert instance["verdict"] == "ok"
            assert instance["kernel"] == tags["bake:kernel"]
            assert instance["digest"] == tags["bake:digest"]
            assert version_compare(instance["kernel_version"], cascade["required"]) >= 0


def test_the_report_opens_in_a_browser_and_shows_what_happened(cascade) -> None:
    html = cascade["report"] / "report.html"
    shown = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
         html.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    report = cascade["out"]["report"]
    assert "succeeded" in shown
    for service in report["services"]:
        for instance in service["instances"]:
            assert instance["instance_id"] in shown
    for image in report["images"]:
        assert image["new_ami"] in shown
    assert shown.count('class="bar ') == len(report["timeline"]) > 0


def test_the_webhook_heard_the_rollout(hook, cascade) -> None:
    rollout_id = cascade["out"]["report"]["rollout_id"]
    summaries = [m for m in hook.messages if m.startswith(f"goldenbake rollout {rollout_id} ")]
    assert len(summaries) == 1
    assert "service shop: swapped, proven (1/1 instances proven)" in summaries[0]


def test_a_second_rollout_has_nothing_to_do(project, fleet, cascade) -> None:
    before = len(project.ok("--json", "history", "--limit", "200").json)
    started = time.monotonic()

    result = project.bake("--json", "rollout", "--all", config=fleet)

    took = time.monotonic() - started
    assert result.code == 0, result.err[-2000:]
    assert result.json["result"] == "nothing to do"
    assert took < 10, f"nothing to do took {took:.1f}s"
    assert len(project.ok("--json", "history", "--limit", "200").json) == before


def test_a_kernel_the_archive_does_not_have_stops_the_rollout_before_any_build(
    project, fleet, cascade
) -> None:
    before = len(project.ok("--json", "history", "--limit", "200").json)

    result = project.bake("rollout", "--all", "--require-kernel", "99.0-1", config=fleet)

    assert result.code == 1
    assert "the archive has no kernel 99.0-1 or newer for image base" in result.err
    assert len(project.ok("--json", "history", "--limit", "200").json) == before


def test_a_rollback_under_load_drops_no_request_and_moves_it_back(project, fleet, cascade) -> None:
    demo = services_of(cascade)["demo"]
    status = project.status(fleet)
    live, standby = status["live"]["color"], status["standby"]["color"]
    assert (live, status["standby"]["healthy"]) == (demo["live_color"], 2)
    leaving, returning = project.ids(live), project.ids(standby)
    with Load(project.url(), rate=20, seconds=600) as load:
        time.sleep(3)
        result = project.ok("--json", "rollback", "demo", config=fleet).json
        time.sleep(3)
    assert (result["live_color"], result["ami"]) == (standby, demo["old_ami"])
    answered_by_one_colour_then_the_other(load, leaving, returning)
    status = project.status(fleet)
    assert (status["live"]["color"], status["live"]["weight"]) == (standby, 100)
    assert (status["standby"]["color"], status["standby"]["healthy"]) == (live, 2)


def test_a_machine_killed_during_the_shift_sends_traffic_back_with_no_failed_request(
    project, fleet, cascade, tmp_path
) -> None:
    # the fleet's config (so shop keeps its frontend and machines), demo shifting in two steps
    text = fleet.read_text()
    assert "shift_steps = [100]" in text
    config = tmp_path / "bake.toml"
    config.write_text(
        text.replace("shift_steps = [100]", 'shift_steps = [50, 100]\nshift_interval = "90s"')
    )
    status = project.status(fleet)
    live, incoming = status["live"]["color"], status["standby"]["color"]
    serving = project.ids(live)
    victim = project.machines(incoming)[0]
    with Load(project.url(), rate=20, seconds=600) as load:
        swapping = subprocess.Popen(
            project.argv("swap", "demo", config=config),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=project.environment(),
            cwd=REPO,
        )
        halfway = wait_until(
            lambda: (
                project.local()["services"]["demo"]["weights"].get(f"demo-{incoming}") == 50
                or swapping.poll() is not None
            ),
            300,
            interval=1,
        )
        assert halfway and swapping.poll() is None, "the shift never reached 50/50"
        time.sleep(5)
        os.kill(victim["pid"], signal.SIGKILL)
        _, err = swapping.communicate(timeout=300)
        time.sleep(3)
    assert swapping.returncode == 1, err[-3000:]
    assert f"{incoming} became unhealthy" in err.strip().splitlines()[-1]
    assert victim["instance_id"] in err
    failures = load.failures()
    print(f"{len(load.answers)} requests, {len(failures)} failed")
    assert failures == [], f"{len(failures)} requests failed: {failures[:5]}"
    served = load.served_by()
    assert set(served[-10:]) <= serving, f"traffic did not go back to {live}"
    assert set(served) & (project.ids(incoming) | {victim["instance_id"]}), (
        f"{incoming} never served"
    )
    status = project.status(fleet)
    assert (status["live"]["color"], status["live"]["weight"]) == (live, 100)
    assert status["rollout"]["state"] == "rolled-back"
    assert "unhealthy" in status["rollout"]["reason"]
    dead = next(m for m in project.machines(incoming) if m["instance_id"] == victim["instance_id"])
    assert dead["state"] == "dead"


def services_of(cascade: dict) -> dict[str, dict[str, Any]]:
    return {service["name"]: service for service in cascade["out"]["report"]["services"]}


def tags_of(project: Project, ami: str) -> dict[str, Any]:
    (image,) = project.aws("ec2").describe_images(ImageIds=[ami])["Images"]
    return {tag["Key"]: tag["Value"] for tag in image["Tags"]}
