"""The parts of `bake rollout` that need no cloud: what a selection covers, how an instance's answer
is read and judged, which kernel an image runs, and notifications to a real local webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bake import config
from bake.campaigns.notify import Notifier, failure_text, summary_text
from bake.campaigns.plan import Selection, kernel_package_version, select
from bake.campaigns.proof import RELEASE_MARKER, read_answer, verdict
from bake.errors import InputError
from bake.packages import Package
from bake.report import ImageResult, InstanceProof, Report, ServiceResult
from bake.settings import NotifySettings

UNAME_V = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)"
LINEAGE = json.dumps({"image": "web", "digest": "d" * 64, "parent": {"digest": "p" * 64}})


def layered(tmp_path: Path) -> config.Config:
    (tmp_path / "suites").mkdir(exist_ok=True)
    return config.from_dict(
        {
            "images": {
                "base": {"base": "debian:bookworm", "steps": [], "verify": ["suites"]},
                "web": {"base": "image:base", "steps": [], "verify": ["suites"]},
                "tools": {"base": "debian:bookworm", "steps": [], "verify": ["suites"]},
            },
            "services": {
                "shop": {"image": "web", "capacity": 1},
                "api": {"image": "web", "capacity": 1},
                "ops": {"image": "tools", "capacity": 1},
            },
        },
        tmp_path / "bake.toml",
    )


def test_an_image_covers_its_descendants_and_their_services(tmp_path: Path) -> None:
    loaded = layered(tmp_path)

    assert select(loaded, Selection(images=("base",))) == (["base", "web"], ["shop", "api"])
    assert select(loaded, Selection(rebuild=("web",))) == (["web"], ["shop", "api"])
    assert select(loaded, Selection(all=True)) == (
        ["base", "web", "tools"],
        ["shop", "api", "ops"],
    )


def test_a_service_covers_its_image_and_the_images_below_it(tmp_path: Path) -> None:
    loaded = layered(tmp_path)

    assert select(loaded, Selection(services=("api",))) == (["base", "web"], ["api"])


def test_a_rollout_of_nothing_or_of_unknown_names_is_bad_input(tmp_path: Path) -> None:
    loaded = layered(tmp_path)

    with pytest.raises(InputError, match="needs images to roll out"):
        select(loaded, Selection())
    with pytest.raises(InputError, match="unknown service 'nope'"):
        select(loaded, Selection(services=("nope",)))


def test_an_answer_gives_release_debian_version_and_digest() -> None:
    text = f"6.1.0-28-cloud-amd64\n{UNAME_V}\n{LINEAGE}\n"

    assert read_answer(text) == ("6.1.0-28-cloud-amd64", "6.1.119-1", "d" * 64, "")
    assert read_answer("") == ("", "", "", "")
    assert read_answer("6.1.0-28-cloud-amd64\nLinux\nnot json") == (
        "6.1.0-28-cloud-amd64",
        "",
        "",
        "",
    )


def test_an_answer_gives_the_release_the_instance_installed() -> None:
    installed = json.dumps({"release": "1.4.2", "sha256": "a" * 64}, indent=2)
    text = f"6.1.0-28-cloud-amd64\n{UNAME_V}\n{LINEAGE}\n\n{RELEASE_MARKER}\n{installed}\n"
    nothing = f"6.1.0-28-cloud-amd64\n{UNAME_V}\n{LINEAGE}\n\n{RELEASE_MARKER}\n"
    none_named = f"{nothing}{json.dumps({'release': None})}\n"

    assert read_answer(text) == ("6.1.0-28-cloud-amd64", "6.1.119-1", "d" * 64, "1.4.2")
    assert read_answer(nothing)[2:] == ("d" * 64, "")
    assert read_answer(none_named)[3] == ""


@pytest.mark.parametrize(
    ("release", "expected_release", "said"),
    [
        ("1.4.2", "1.4.2", "ok"),
        ("", "", "ok"),
        ("1.4.1", "1.4.2", "release 1.4.1, expected 1.4.2"),
        ("", "1.4.2", "release none, expected 1.4.2"),
        ("1.4.2", "", "release 1.4.2, expected none"),
    ],
)
def test_the_verdict_compares_the_release(release: str, expected_release: str, said: str) -> None:
    found = verdict(
        "6.1.0-28-cloud-amd64",
        "6.1.119-1",
        "d" * 64,
        "6.1.0-28-cloud-amd64",
        "d" * 64,
        None,
        release,
        expected_release,
    )
    assert found == said


@pytest.mark.parametrize(
    ("kernel", "version", "digest", "required", "expected"),
    [
        ("6.1.0-28-cloud-amd64", "6.1.119-1", "d" * 64, None, "ok"),
        ("6.1.0-28-cloud-amd64", "6.1.119-1", "d" * 64, "6.1.119-1", "ok"),
        ("6.1.0-28-cloud-amd64", "6.1.119-1", "d" * 64, "6.1.119-1+deb12u1", "older than"),
        ("6.1.0-27-cloud-amd64", "6.1.115-1", "d" * 64, None, "expected 6.1.0-28"),
        ("6.1.0-28-cloud-amd64", "6.1.119-1", "e" * 64, None, "digest eeeeeeeeeeee"),
        ("", "", "", None, "no answer"),
    ],
)
def test_the_verdict_compares_with_the_ami_and_the_required_kernel(
    kernel: str, version: str, digest: str, required: str | None, expected: str
) -> None:
    said = verdict(kernel, version, digest, "6.1.0-28-cloud-amd64", "d" * 64, required)

    assert (said == "ok") == (expected == "ok")
    assert expected in said


def test_the_kernel_version_is_that_of_the_running_kernels_package() -> None:
    packages = [
        Package("linux-image-6.1.0-27-cloud-amd64", "6.1.115-1", "amd64", "linux-signed", "1"),
        Package("linux-image-6.1.0-28-cloud-amd64", "6.1.119-1", "amd64", "linux-signed", "1"),
        Package("linux-image-cloud-amd64", "6.1.119-1", "amd64", "linux-signed", "1"),
    ]

    assert kernel_package_version(packages, "6.1.0-27-cloud-amd64") == "6.1.115-1"
    assert kernel_package_version(packages, "unknown") == "6.1.119-1", "else the newest kernel"
    assert kernel_package_version([], "6.1.0-27-cloud-amd64") == ""


class Hook(ThreadingHTTPServer):
    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), HookHandler)
        self.status = status
        self.received: list[dict] = []


class HookHandler(BaseHTTPRequestHandler):
    server: Hook

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.received.append(json.loads(self.rfile.read(length)))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=[200])
def hook(request: pytest.FixtureRequest) -> Iterator[Hook]:
    server = Hook(request.param)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def report() -> Report:
    proof = InstanceProof(
        "i-1", "green", "6.1.0-28", "6.1.119-1", "d" * 64, "6.1.0-28", "d" * 64, "ok"
    )
    return Report(
        rollout_id="r1",
        target="local",
        started="2026-12-03T01:00:00Z",
        finished="2026-12-03T01:10:00Z",
        result="succeeded",
        options={},
        images=[ImageResult("base", "baked", old_ami="ami-1", new_ami="ami-2")],
        services=[
            ServiceResult(
                "shop", "base", "swapped", new_ami="ami-2", instances=[proof], verdict="proven"
            )
        ],
        timeline=[],
    )


def test_a_webhook_gets_a_slack_message_per_failure_and_per_rollout(hook: Hook) -> None:
    url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    warnings: list[str] = []
    notifier = Notifier(NotifySettings(webhook=url), lambda: None, warnings.append)

    notifier.send(failure_text("r1", "service api", "green never became healthy"))
    notifier.send(summary_text(report()))

    first, second = (message["text"] for message in hook.received)
    assert first == "goldenbake rollout r1: service api failed: green never became healthy"
    assert second.startswith("goldenbake rollout r1 on local: succeeded")
    assert "image base: baked ami-1 -> ami-2" in second
    assert "service shop: swapped, proven (1/1 instances proven)" in second
    assert warnings == []


@pytest.mark.parametrize("hook", [500], indirect=True)
def test_a_webhook_that_refuses_is_a_warning(hook: Hook) -> None:
    url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    warnings: list[str] = []

    Notifier(NotifySettings(webhook=url), lambda: None, warnings.append).send("hello")

    assert len(hook.received) == 1
    (warning,) = warnings
    assert warning.startswith(f"warning: notification to {url} failed")


def test_an_unreachable_webhook_is_a_warning_and_no_webhook_sends_nothing() -> None:
    warnings: list[str] = []
    unreachable = NotifySettings(webhook="http://127.0.0.1:9/hook")

    Notifier(unreachable, lambda: None, warnings.append).send("hello")
    quiet = Notifier(NotifySettings(), lambda: None, warnings.append)
    quiet.send("hello")

    assert len(warnings) == 1 and "failed" in warnings[0]
    assert not quiet.enabled


def test_notify_settings_are_checked_at_load(tmp_path: Path) -> None:
    (tmp_path / "suites").mkdir()
    raw = {"images": {"base": {"base": "debian:bookworm", "steps": [], "verify": ["suites"]}}}

    with pytest.raises(InputError, match="webhook"):
        config.from_dict({**raw, "notify": {"webhook": "ftp://hooks"}}, tmp_path / "bake.toml")
    with pytest.raises(InputError, match="sns_topic"):
        config.from_dict({**raw, "notify": {"sns_topic": "topic"}}, tmp_path / "bake.toml")
