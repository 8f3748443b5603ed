"""`bake rollout` on the local target with two images (`base`, and `web` on it) and two services
(`demo`, and `shop` added here): a rebuild of base cascades to web and to both services, every
instance is proven over SSH, the report opens in a real browser, the webhook hears of it, and a
second rollout has nothing to do. Runs after test_pipeline.py, on the images it baked."""

from __future__ import annotations

import json
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
from tests.e2e.project import Project, variant

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
    report = tmp_path_factory.mktemp("report")
    required = newest_kernel(project)
    result = project.bake(
        "--json", "rollout", "--all", "--rebuild", "base", "--parallel", "2",
        "--require-kernel", required, "--report", str(report), config=fleet,
    )  # fmt: skip
    assert result.code == 0, failed_rollout(project, report, result.err)
    return {"out": result.json, "report": report, "required": required}


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
    services = {service["name"]: service for service in report["services"]}
    assert {name: s["action"] for name, s in services.items()} == {
        "demo": "swapped",
        "shop": "swapped",
    }
    assert {s["new_ami"] for s in services.values()} == {web}
    for machine in project.machines(service="shop"):
        if machine["state"] == "running" and machine["color"] == services["shop"]["live_color"]:
            assert machine["ami"] == web


def test_every_instance_of_both_services_is_proven_to_run_the_new_kernel(project, cascade) -> None:
    services = {s["name"]: s for s in cascade["out"]["report"]["services"]}
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


def tags_of(project: Project, ami: str) -> dict[str, Any]:
    (image,) = project.aws("ec2").describe_images(ImageIds=[ami])["Images"]
    return {tag["Key"]: tag["Value"] for tag in image["Tags"]}
