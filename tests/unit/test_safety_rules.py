"""Each safety rule of a run, pinned by a test that fails when the rule is taken out: only verified
AMIs are swapped in, a verification must have run tests, health gates every move of traffic, an undo
that fails never hides the failure it undid, and history reads newest first."""

from __future__ import annotations

from pathlib import Path

import pytest

from bake import bluegreen, pipeline
from bake.aws import images
from bake.bluegreen import Health
from bake.errors import BakeError, InputError, StageFailed
from bake.history import History
from bake.local.seed import ensure_seeded
from bake.records import (
    Built,
    LaunchTemplateVersion,
    Records,
    RolloutPlan,
    RunOptions,
    VerifiedAmi,
)
from bake.stages.green_asg import GreenAsgStage
from bake.stages.launch_template import LaunchTemplateStage
from bake.stages.prepare import Prepare
from bake.stages.rollout import RolloutStage
from bake.stages.verify import read_junit


@pytest.fixture
def seeded(cloud, config, base_ami):
    ensure_seeded(cloud, config, base_ami)
    return cloud


def _listener_and_versions(cloud, service) -> tuple[dict[str, int], int]:
    state = bluegreen.describe(cloud, service)
    weights = {state.live.color: state.live.weight}
    versions = cloud.client("ec2").describe_launch_template_versions(LaunchTemplateName="demo")
    return weights, len(versions["LaunchTemplateVersions"])


# only verified AMIs are swapped in


@pytest.mark.parametrize("verified", [None, "false", "yes", "True"])
def test_swap_refuses_an_ami_not_tagged_verified_true(
    seeded, register_ami, make_context, verified
) -> None:
    ami = register_ami("goldenbake-base-2")
    if verified is not None:
        images.tag(seeded, ami, {"bake:verified": verified})
    ctx = make_context(options=RunOptions(ami=ami))
    before = _listener_and_versions(seeded, ctx.service)

    with pytest.raises(InputError, match=f"{ami} is not a verified AMI") as raised:
        pipeline.execute(ctx, "swap")

    assert raised.value.exit_code == 2
    assert _listener_and_versions(seeded, ctx.service) == before


def test_swap_takes_a_verified_ami(seeded, register_ami, make_context, run_stage) -> None:
    ami = register_ami("goldenbake-base-2")
    images.tag(seeded, ami, {"bake:verified": "true", "bake:image": "base"})
    ctx = make_context(options=RunOptions(ami=ami))
    ctx.command = "swap"
    run_stage(Prepare, ctx)
    assert ctx.records.need(VerifiedAmi, "test").ami == ami


@pytest.mark.parametrize("image", [None, "web"])
def test_swap_refuses_an_ami_of_another_image(seeded, register_ami, make_context, image) -> None:
    ami = register_ami("goldenbake-web-1")
    images.tag(seeded, ami, {"bake:verified": "true", **({"bake:image": image} if image else {})})
    ctx = make_context(options=RunOptions(ami=ami))
    before = _listener_and_versions(seeded, ctx.service)
    with pytest.raises(
        InputError, match=f"{ami} is an AMI of image {image or '.none.'}, not of base"
    ):
        pipeline.execute(ctx, "swap")
    assert _listener_and_versions(seeded, ctx.service) == before


def test_swap_refuses_an_ami_of_another_account(seeded, make_context) -> None:
    (public, *_) = seeded.client("ec2").describe_images(Owners=["amazon"])["Images"]
    ami = public["ImageId"]
    images.tag(seeded, ami, {"bake:verified": "true", "bake:image": "base"})
    ctx = make_context(options=RunOptions(ami=ami))
    with pytest.raises(InputError, match=f"{ami} belongs to account {public['OwnerId']}, not"):
        pipeline.execute(ctx, "swap")


def test_swap_without_a_published_ami_says_what_to_run(seeded, make_context) -> None:
    ctx = make_context()
    ctx.command = "swap"
    with pytest.raises(InputError, match="image base has no published AMI to swap to"):
        Prepare(ctx).run()


def test_swap_takes_the_published_ami_by_default(seeded, register_ami, make_context) -> None:
    ami = register_ami("goldenbake-base-2")
    images.tag(seeded, ami, {"bake:verified": "true"})
    images.publish(seeded, "base", ami)
    ctx = make_context()
    ctx.command = "swap"
    records = Records(*Prepare(ctx).run().records)
    assert records.get(VerifiedAmi) == VerifiedAmi(ami)


# a verification must have run tests


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="{errors}" failures="{failures}" tests="{tests}">
</testsuite></testsuites>"""


@pytest.mark.parametrize(
    ("tests", "failures", "errors", "passed"),
    [(0, 0, 0, False), (3, 0, 0, True), (3, 1, 0, False), (3, 0, 1, False), (1, 0, 0, True)],
)
def test_a_report_passes_only_with_tests_and_no_failures_or_errors(
    tmp_path: Path, tests: int, failures: int, errors: int, passed: bool
) -> None:
    report = tmp_path / "report.xml"
    report.write_text(JUNIT.format(tests=tests, failures=failures, errors=errors))
    assert read_junit(report).passed is passed


def test_a_missing_report_is_a_failed_verification(tmp_path: Path) -> None:
    report = read_junit(tmp_path / "never-written.xml")
    assert not report.passed and report.errors == 1


# health gates every move of traffic


@pytest.mark.parametrize(
    ("expected", "in_service", "unhealthy", "ok"),
    [
        (0, [], {}, False),
        (1, ["i-1"], {}, True),
        (2, ["i-1"], {}, False),
        (2, ["i-1", "i-2"], {}, True),
        (2, ["i-1", "i-2", "i-3"], {}, True),
        (2, ["i-1", "i-2"], {"i-2": "unhealthy"}, False),
        (1, ["i-1"], {"i-9": "draining"}, False),
    ],
)
def test_health_is_ok_only_with_enough_in_service_and_none_unhealthy(
    expected: int, in_service: list[str], unhealthy: dict[str, str], ok: bool
) -> None:
    assert Health(expected, in_service, unhealthy).ok is ok


def test_a_standby_on_the_version_but_unhealthy_is_not_taken_as_done(
    seeded, register_ami, make_context, run_stage, target_health
) -> None:
    ctx = make_context(records=(VerifiedAmi(register_ami("goldenbake-base-2")),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)
    run_stage(GreenAsgStage, ctx)
    target_health.fail("demo-green")
    again = make_context(
        records=(
            ctx.records.need(RolloutPlan, "test"),
            ctx.records.need(LaunchTemplateVersion, "test"),
        )
    )

    with pytest.raises(StageFailed, match="demo-green is not healthy"):
        GreenAsgStage(again).run()


def test_sending_traffic_to_a_colour_that_does_not_exist_names_what_is_missing(
    seeded, config
) -> None:
    service = config.service("demo")
    with pytest.raises(BakeError, match="'demo-green' or target group 'demo-green'"):
        bluegreen.send_all_to(seeded, service, "green")
    assert bluegreen.describe(seeded, service).live.weight == 100


@pytest.mark.parametrize(
    ("weights", "live"),
    [
        ({"blue": 100, "green": 0}, "blue"),
        ({"blue": 0, "green": 100}, "green"),
        ({"blue": 10, "green": 90}, "green"),
        ({"blue": 50, "green": 50}, "blue"),
        ({}, "blue"),
        ({"green": 1}, "green"),
    ],
)
def test_the_live_colour_carries_the_most_traffic_and_blue_wins_a_tie(
    weights: dict[str, int], live: str
) -> None:
    assert bluegreen.live_color(weights) == live


# history reads newest first


def test_a_newer_failed_verification_outranks_an_older_pass(tmp_path: Path) -> None:
    history = History(tmp_path / "history.sqlite")
    history.record_verification("r1", "base", "sha", "suites", True, "6.1.0-1", None, "1 passed")
    history.record_verification("r2", "base", "sha", "suites", False, "6.1.0-1", None, "1 failed")
    newest = history.verification("sha", "suites")
    assert newest is not None and (newest.run_id, newest.passed) == ("r2", False)
    history.record_verification("r3", "base", "sha", "suites", True, "6.1.0-2", None, "1 passed")
    newest = history.verification("sha", "suites")
    assert newest is not None and (newest.run_id, newest.passed) == ("r3", True)


def test_builds_runs_and_the_newest_verified_build_come_newest_first(tmp_path: Path) -> None:
    history = History(tmp_path / "history.sqlite")
    for run_id, artifact in (("r1", "old"), ("r2", "new")):
        history.record_build(run_id, Built("base", f"digest-{artifact}", "ami-0src", artifact))
        history.record_verification(run_id, "base", artifact, "suites", True, run_id, None, "ok")
    assert [build.run_id for build in history.builds("base")] == ["r2", "r1"]
    newest = history.newest_verified("base")
    assert newest is not None and newest.built.artifact == "new" and newest.kernel == "r2"
    first = history.start_run("build", "base", "local")
    second = history.start_run("verify", "base", "local")
    assert [run.run_id for run in history.runs()] == [second, first]
    assert [run.run_id for run in history.runs(limit=1)] == [second]


@pytest.mark.parametrize(
    ("health", "said"),
    [
        (Health(2, ["i-1", "i-2"]), "healthy"),
        (Health(2, ["i-1"]), "1 of 2 instances InService"),
        (
            Health(2, ["i-1", "i-2"], {"i-2": "unhealthy Target.Timeout"}),
            "i-2 unhealthy Target.Timeout",
        ),
        (
            Health(3, ["i-1"], {"i-1": "draining", "i-0": "initial"}),
            "1 of 3 instances InService; i-0 initial; i-1 draining",
        ),
    ],
)
def test_health_says_what_is_wrong_in_one_line(health: Health, said: str) -> None:
    assert health.describe() == said


def test_a_fresh_colour_state_carries_no_traffic_and_no_health() -> None:
    state = bluegreen.ColorState("green")
    assert (state.weight, state.desired, state.in_service, state.healthy) == (0, 0, 0, 0)
    assert state.health.ok is False and state.group is None
    assert state.to_dict() == {
        "color": "green", "asg": None, "ami": None, "release": None,
        "launch_template_version": None, "target_group": None, "target_group_arn": None,
        "weight": 0, "desired": 0, "in_service": 0, "healthy": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("base", "said"),
    [
        ({"debian": "bookworm", "ami": "ami-1"}, "a table with one of debian, image, ssm, ami"),
        ({"filter": "debian-12-*"}, 'a base filter needs at least name = "pattern"'),
        ({"filter": {"owners": ["self"]}}, 'a base filter needs at least name = "pattern"'),
        ({"ssm": ""}, "a table with one of debian, image, ssm, ami"),
        ("debian:", "is not a base"),
        (["debian:bookworm"], "a table with one of debian, image, ssm, ami"),
    ],
)
def test_a_base_that_is_not_one_says_what_one_is(tmp_path: Path, base, said: str) -> None:
    from bake.config import from_dict

    (tmp_path / "suites").mkdir()
    raw = {"images": {"base": {"base": base, "steps": [], "verify": ["suites"]}}}
    with pytest.raises(InputError, match="images.base.base") as raised:
        from_dict(raw, tmp_path / "bake.toml")
    assert said in raised.value.message


def test_history_keeps_every_field_it_is_given(tmp_path: Path) -> None:
    history = History(tmp_path / "history.sqlite")
    history.record_build("r1", Built("base", "d1", "ami-src", "sha-1", None))
    history.record_build("r2", Built("base", "d2", "ami-src", "sha-2", None))
    history.record_build("r3", Built("web", "d1", "ami-src", None, "ami-web"))
    history.set_build_ami("base", "d1", "ami-1")
    (second, first) = history.builds("base")
    assert (first.run_id, first.digest, first.ami, first.artifact) == ("r1", "d1", "ami-1", "sha-1")
    assert (second.ami, second.source_ami) == (None, "ami-src")
    assert [build.run_id for build in history.builds("base", "d2")] == ["r2"]
    assert history.builds("web")[0].built() == Built("web", "d1", "ami-src", None, "ami-web")

    history.record_verification(
        "r1", "base", "sha-1", "s", False, "", tmp_path / "j.xml", "1 failed"
    )
    found = history.verification("sha-1", "s")
    assert found is not None
    assert (found.passed, found.kernel, found.junit, found.summary) == (
        False,
        "",
        str(tmp_path / "j.xml"),
        "1 failed",
    )
    assert history.verification("sha-1", "other suites") is None
    assert history.newest_verified("base") is None

    history.record_artifact("sha-1", "base", tmp_path / "a.qcow2")
    history.record_artifact("sha-2", "base", tmp_path / "b.qcow2")
    history.set_artifact_ami("sha-2", "ami-2")
    assert history.artifact("sha-1").path == str(tmp_path / "a.qcow2")
    assert history.artifact("sha-1").ami is None
    assert history.artifact_for_ami("ami-2").sha256 == "sha-2"
    assert history.artifact_for_ami("ami-9") is None and history.artifact("sha-9") is None
    assert [artifact.sha256 for artifact in history.artifacts()] == ["sha-1", "sha-2"]


def test_a_finished_run_says_how_long_it_took(tmp_path: Path) -> None:
    history = History(tmp_path / "history.sqlite")
    run_id = history.start_run("build", "base", "local")
    history._write(
        "UPDATE runs SET started = '2026-11-27T07:00:00.000000Z' WHERE run_id = ?", (run_id,)
    )
    assert history.runs()[0].seconds is None
    history.finish_run(run_id, "succeeded")
    history._write(
        "UPDATE runs SET finished = '2026-11-27T07:01:30.250000Z' WHERE run_id = ?", (run_id,)
    )
    (run,) = history.runs()
    assert (run.status, run.seconds, run.error) == ("succeeded", 90.25, None)


def test_waiting_for_health_waits_for_targets_that_start_slowly(
    seeded, config, register_ami, make_context, run_stage, target_health
) -> None:
    ctx = make_context(records=(VerifiedAmi(register_ami("goldenbake-base-2")),))
    run_stage(RolloutStage, ctx)
    run_stage(LaunchTemplateStage, ctx)
    run_stage(GreenAsgStage, ctx)
    green = bluegreen.describe(seeded, config.service("demo")).standby
    target_health.fail_for("demo-green", answers=6)  # three describe calls of two targets

    health = bluegreen.wait_healthy(seeded, "demo-green", green.target_group_arn, 2, timeout=8)

    assert health.ok, health.describe()
    assert target_health.answers_left["demo-green"] < 0, "it did not wait for the targets"


def test_traffic_moves_past_a_colour_that_has_no_target_group(seeded, config, base_ami) -> None:
    from bake.aws import autoscaling

    blue = autoscaling.find_group(seeded, "demo-blue")
    autoscaling.create_group(
        seeded,
        "demo-green",
        launch_template_id=blue["LaunchTemplate"]["LaunchTemplateId"],
        launch_template_version=1,
        capacity=(1, 1, 1),
        subnets=blue["VPCZoneIdentifier"],
        target_group_arns=[],
    )
    service = config.service("demo")
    assert bluegreen.describe(seeded, service).standby.target_group_arn is None
    state = bluegreen.send_all_to(seeded, service, "blue")
    assert (state.live.color, state.live.weight) == ("blue", 100)
