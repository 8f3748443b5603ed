"""The rollout report: its JSON round trip, its atomic files, and its HTML read in a browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bake.errors import InputError
from bake.packages import Update
from bake.report import (
    ImageResult,
    InstanceProof,
    Report,
    ServiceResult,
    TimelineEntry,
    gantt,
    proof_verdict,
    read,
    render_html,
    timestamp,
    write,
)

OLD_KERNEL = "6.1.0-27-cloud-amd64"
NEW_KERNEL = "6.1.0-28-cloud-amd64"
DIGEST = "9b1c0e57aa3de1f4c6b2a08f7d93e4c1b5a6d7e8f9012345"
UPDATES = [
    Update("linux-image-cloud-amd64", "amd64", "6.1.115-1", "6.1.119-1", "bookworm-security"),
    *(
        Update(f"lib{name}", "amd64", "1.0-1", "1.0-2", "bookworm-updates", source=name)
        for name in "abcdefghijkl"
    ),
]


def _proof(instance_id: str, color: str, kernel: str = NEW_KERNEL) -> InstanceProof:
    return InstanceProof(
        instance_id=instance_id,
        color=color,
        kernel=kernel,
        kernel_version="6.1.119-1",
        digest=DIGEST,
        expected_kernel=NEW_KERNEL,
        expected_digest=DIGEST,
        verdict=proof_verdict(kernel, DIGEST, NEW_KERNEL, DIGEST),
        detail="read over ssh",
    )


def _entry(subject: str, stage: str, start: int, end: int, result: str = "done") -> TimelineEntry:
    return TimelineEntry(
        subject=subject,
        stage=stage,
        started=f"2024-11-05T09:{start // 60:02d}:{start % 60:02d}Z",
        finished=f"2024-11-05T09:{end // 60:02d}:{end % 60:02d}Z",
        result=result,  # type: ignore[arg-type]
    )


def _report(service_name: str = "demo") -> Report:
    return Report(
        rollout_id="r-20241105-0900",
        target="local",
        started="2024-11-05T09:00:00Z",
        finished="2024-11-05T09:07:30Z",
        result="failed",
        options={"dry_run": False, "only": ["base", "web"]},
        images=[
            ImageResult(
                name="base",
                action="baked",
                reasons=["security updates: linux-image-cloud-amd64 6.1.115-1 -> 6.1.119-1"],
                old_ami="ami-0aaaaaaaaaaaaaaa1",
                new_ami="ami-0bbbbbbbbbbbbbbb2",
                old_kernel=OLD_KERNEL,
                new_kernel=NEW_KERNEL,
                updates=UPDATES,
            ),
            ImageResult(name="web", action="up to date", old_ami="ami-0ccccccccccccccc3"),
        ],
        services=[
            ServiceResult(
                name=service_name,
                image="base",
                action="swapped",
                verdict="failed",
                old_ami="ami-0aaaaaaaaaaaaaaa1",
                new_ami="ami-0bbbbbbbbbbbbbbb2",
                live_color="green",
                error="1 of 2 instances runs the old kernel",
                instances=[
                    _proof("i-0123456789abcdef0", "green"),
                    _proof("i-0fedcba9876543210", "green", kernel=OLD_KERNEL),
                ],
            )
        ],
        timeline=[
            _entry("image base", "build", 0, 240),
            _entry("image base", "verify", 240, 330),
            _entry("image base", "register", 330, 340),
            _entry("image web", "build", 0, 1, "skipped"),
            _entry(f"service {service_name}", "swap", 340, 400),
            _entry(f"service {service_name}", "proof", 400, 450, "failed"),
        ],
    )


def test_the_report_survives_a_round_trip_through_json() -> None:
    report = _report()
    assert Report.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_the_json_has_the_documented_shape() -> None:
    data = _report().to_dict()
    assert sorted(data) == [
        "finished", "images", "options", "result", "rollout_id", "services", "started",
        "target", "timeline",
    ]  # fmt: skip
    assert data["images"][0]["updates"][0] == UPDATES[0].to_dict()
    proof = data["services"][0]["instances"][1]
    assert proof["verdict"] == f"kernel {OLD_KERNEL}, expected {NEW_KERNEL}"
    assert data["timeline"][0] == {
        "subject": "image base",
        "stage": "build",
        "started": "2024-11-05T09:00:00Z",
        "finished": "2024-11-05T09:04:00Z",
        "result": "done",
    }


def test_write_makes_the_directory_and_both_files(tmp_path: Path) -> None:
    directory = tmp_path / "reports" / "r-1"
    json_path, html_path = write(_report(), directory)
    assert (json_path, html_path) == (directory / "report.json", directory / "report.html")
    text = json_path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert read(json_path) == _report()
    assert "<svg" in html_path.read_text(encoding="utf-8")
    # No temporary file is left beside them.
    assert sorted(path.name for path in directory.iterdir()) == ["report.html", "report.json"]


def test_write_replaces_an_earlier_report_whole(tmp_path: Path) -> None:
    write(_report(), tmp_path)
    finished = replace(_report(), result="succeeded", services=[])
    json_path, _ = write(finished, tmp_path)
    assert read(json_path).result == "succeeded"


def test_a_failed_write_leaves_the_old_report_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    json_path, _ = write(_report(), tmp_path)
    before = json_path.read_text(encoding="utf-8")

    def refuse(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write(replace(_report(), result="succeeded"), tmp_path)
    assert json_path.read_text(encoding="utf-8") == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.html", "report.json"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not a rollout report"),
        ('{"rollout_id": "r"}', "'target'"),
        (json.dumps({**_report().to_dict(), "result": "exploded"}), "'exploded' is not one of"),
        (json.dumps({**_report().to_dict(), "finished": "yesterday"}), "not an ISO-8601 time"),
    ],
)
def test_reading_a_bad_report_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(message)):
        read(path)


def test_a_stage_cannot_finish_before_it_starts() -> None:
    with pytest.raises(ValueError, match="before it started"):
        _entry("image base", "build", 60, 30)


def test_an_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="'rebooted' is not one of"):
        ImageResult(name="base", action="rebooted")  # type: ignore[arg-type]


def test_proof_verdicts_name_what_is_wrong() -> None:
    assert proof_verdict(NEW_KERNEL, DIGEST, NEW_KERNEL, DIGEST) == "ok"
    assert proof_verdict(OLD_KERNEL, DIGEST, NEW_KERNEL, DIGEST) == (
        f"kernel {OLD_KERNEL}, expected {NEW_KERNEL}"
    )
    assert proof_verdict(NEW_KERNEL, "", NEW_KERNEL, DIGEST) == (
        f"digest unknown, expected {DIGEST[:12]}"
    )


def test_times_are_written_in_utc_with_a_z() -> None:
    from datetime import datetime, timedelta, timezone

    moment = datetime(2024, 11, 5, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    assert timestamp(moment) == "2024-11-05T09:30:00Z"


def test_the_timeline_places_each_bar_by_its_time() -> None:
    chart = gantt(_report())
    assert [row.subject for row in chart.rows] == ["image base", "image web", "service demo"]
    build, verify = chart.bars[0], chart.bars[1]
    # build runs 0-240 s of a 450 s rollout, verify 240-330 s: verify starts where build ends.
    assert build.x == pytest.approx(150)
    assert build.width == pytest.approx(720 * 240 / 450, abs=0.2)
    assert verify.x == pytest.approx(build.x + build.width, abs=0.2)
    assert chart.bars[4].y > chart.bars[3].y > chart.bars[0].y
    assert [tick.label for tick in chart.ticks][:3] == ["0 s", "60 s", "120 s"]
    assert "proof failed" in chart.bars[5].title


def test_the_html_escapes_what_it_shows() -> None:
    html = render_html(_report(service_name="<script>window.injected=1</script>"))
    assert "<script" not in html
    assert "&lt;script&gt;window.injected=1&lt;/script&gt;" in html


def test_the_html_asks_for_nothing_from_the_network() -> None:
    html = render_html(_report())
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and "@import" not in html


def test_many_updates_fold_into_a_collapsible_list() -> None:
    html = render_html(_report())
    assert "<details><summary>13 updates</summary>" in html
    few = replace(_report(), images=[replace(_report().images[0], updates=UPDATES[:2])])
    assert "<details>" not in render_html(few)


def _dump_dom(html_path: Path, profile: Path) -> tuple[str, float]:
    """The page's DOM after Chromium has loaded it, and the seconds that took."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: `make install` brings it (Debian's chromium)")
    started = time.monotonic()
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--dump-dom",
            html_path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, time.monotonic() - started


@pytest.mark.browser
def test_a_browser_shows_the_result_images_instances_and_timeline(tmp_path: Path) -> None:
    report = _report(service_name="<script>window.injected=1</script>")
    _, html_path = write(report, tmp_path / "report")
    dom, seconds = _dump_dom(html_path, tmp_path / "profile")
    print(f"chromium --dump-dom took {seconds:.1f} s")

    assert 'class="badge result result-failed">failed<' in dom
    for image in report.images:
        for ami in (image.old_ami, image.new_ami):
            assert ami in dom
    # The script in the service's name is text, not an element.
    assert "<script" not in dom
    assert "Service &lt;script&gt;window.injected=1&lt;/script&gt;" in dom

    rows = re.findall(r'<tr class="instance (ok|failed)">(.*?)</tr>', dom, re.S)
    assert [(verdict, instance) for verdict, body in rows for instance in re.findall(
        r"<code>(i-[0-9a-f]+)</code>", body
    )] == [("ok", "i-0123456789abcdef0"), ("failed", "i-0fedcba9876543210")]  # fmt: skip
    assert f"kernel {OLD_KERNEL}, expected {NEW_KERNEL}" in rows[1][1]

    bars = re.findall(r'<rect class="bar bar-(done|failed|skipped)"', dom)
    assert bars == [entry.result for entry in report.timeline]
    assert re.search(r"<title>image base: build done, 240\.0 s from \+0\.0 s</title>", dom)
    assert not re.search(r"""(?:src|href)=["']?https?://""", dom)
