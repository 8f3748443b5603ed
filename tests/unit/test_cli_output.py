"""What `bake` prints for a person and which exit code it gives, through `main()`, against the
test's moto server: status, history, plan, retire and rollback; a held lock exits 3, a failed stage
1, Ctrl-C 130."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bake import app as app_module
from bake import locks
from bake.aws import images
from bake.cli import main
from bake.history import History
from bake.local.store import ImageStore
from bake.records import Built
from bake.targets.local import LocalTarget

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
[local]
machines = false  # the test's moto server plays the cloud; no machines behind it

[images.base]
base = "debian:bookworm"
steps = ["patch"]
verify = ["serverspec_tests/base"]

[services.demo]
image = "base"
capacity = 2
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cloud, base_ami) -> Path:
    """A project whose local target is the test's moto server, with a base AMI and its disk."""
    shutil.copytree(REPO / "serverspec_tests", tmp_path / "serverspec_tests")
    (tmp_path / "bake.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BAKE_CONFIG", raising=False)
    monkeypatch.delenv("BAKE_STATE_DIR", raising=False)

    class TestCloudTarget(LocalTarget):
        """The local target on the test's moto server; its base disk is a few bytes."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._cloud = cloud

        def base_ami(self, suite: str = "bookworm") -> str:
            disk = self.state.root / "base.qcow2"
            disk.write_bytes(b"a base disk")
            sha = self.store.put(disk, "base-disk:debian-bookworm")
            self.store.set_ami(sha, base_ami)
            return base_ami

    monkeypatch.setitem(app_module.TARGETS, "local", lambda: TestCloudTarget)
    return tmp_path


def bake(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_status_shows_the_live_colour_and_the_image(project: Path, capsys, base_ami) -> None:
    code, out, _ = bake(capsys, "status", "demo")
    assert code == 0
    assert out.splitlines() == [
        "service demo",
        f"  live: blue asg=demo-blue ami={base_ami} launch-template-version=1 weight=100 "
        "healthy=2/2",
        "  standby: none",
        "  image base: bake (no verified AMI published yet)",
    ]


def test_status_json_has_the_documented_keys(project: Path, capsys) -> None:
    code, out, _ = bake(capsys, "status", "demo", "--json")
    status = json.loads(out)
    assert code == 0
    assert set(status) == {"service", "live", "standby", "rollout", "image"}
    assert status["rollout"] is None
    assert set(status["live"]) == {
        "color", "asg", "ami", "release", "launch_template_version", "target_group",
        "target_group_arn", "weight", "desired", "in_service", "healthy",
    }  # fmt: skip
    assert status["standby"] is None
    assert set(status["image"]) == {
        "image", "base", "base_ami", "published", "built_from", "action", "reason",
    }  # fmt: skip


def test_plan_lists_each_image_and_what_a_bake_would_do(project: Path, capsys) -> None:
    code, out, _ = bake(capsys, "plan")
    assert code == 0
    assert out.splitlines() == ["base         bake        no verified AMI published yet"]


def test_history_lists_runs_and_their_stages(project: Path, capsys) -> None:
    assert bake(capsys, "history") == (0, "no runs yet\n", "")
    history = History(project / ".bake" / "history.sqlite")
    run_id = history.start_run("build", "base", "local")
    stage = history.start_stage(run_id, "render")
    history.finish_stage(stage, "succeeded")
    history.set_run_ami(run_id, "ami-0abc")
    history.finish_run(run_id, "succeeded")

    code, out, _ = bake(capsys, "history")

    run_line, stage_line = out.splitlines()
    assert code == 0
    assert run_line.startswith(f"{run_id}  build         base       succeeded")
    assert run_line.endswith("ami-0abc")
    assert stage_line.split() == ["render", "succeeded", "0s"]


def test_retire_dry_run_lists_and_retires_nothing(
    project: Path, capsys, cloud, register_ami
) -> None:
    old, new = register_ami("goldenbake-base-old"), register_ami("goldenbake-base-new")
    for ami, verified in ((old, "false"), (new, "true")):
        images.tag(cloud, ami, {"bake:image": "base", "bake:verified": verified})

    code, out, err = bake(capsys, "retire", "base", "--dry-run")

    assert code == 0 and out.startswith("base: succeeded (run ")
    assert f"would retire {old}" in err and f"keep {new}" in err
    assert images.describe(cloud, old) is not None
    code, out, _ = bake(capsys, "retire", "base", "--json")
    decisions = {decision["ami"]: decision["keep"] for decision in json.loads(out)}
    assert code == 0 and decisions == {old: False, new: True}
    assert images.describe(cloud, old) is None


def test_a_failed_stage_exits_1_with_one_line(project: Path, capsys) -> None:
    code, out, err = bake(capsys, "rollback", "demo")
    assert code == 1 and out == ""
    assert err.splitlines()[-1] == (
        "error: service demo: nothing to roll back to: blue is live and the standby Auto Scaling "
        "group 'demo-green' does not exist"
    )
    (run,) = History(project / ".bake" / "history.sqlite").runs()
    assert (run.command, run.status) == ("rollback", "failed")


def test_a_held_lock_exits_3_and_changes_nothing(project: Path, capsys) -> None:
    with locks.hold(project / ".bake" / "locks", "service-demo", "bake swap (pid 1234)"):
        code, out, err = bake(capsys, "swap", "demo")
    assert code == 3 and out == ""
    assert err == (
        "error: service-demo is locked by bake swap (pid 1234) (wait for that run to finish)\n"
    )
    assert History(project / ".bake" / "history.sqlite").runs() == []


def test_ctrl_c_exits_130(project: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(app_module.App, "run", interrupted)
    code, _, err = bake(capsys, "swap", "demo")
    assert code == 130
    assert err.strip() == "error: interrupted; the interrupted stage was undone"


def test_a_bug_is_one_line_and_exit_1(project: Path, capsys, monkeypatch) -> None:
    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(app_module.App, "run", broken)
    code, _, err = bake(capsys, "swap", "demo")
    assert code == 1
    assert err == (
        "error: internal error: ZeroDivisionError: division by zero "
        "(run with --debug for the traceback)\n"
    )


def test_republished_after_a_restart(project: Path, capsys, cloud) -> None:
    """A fresh local cloud (moto keeps nothing) gets each image's newest verified build back."""
    history = History(project / ".bake" / "history.sqlite")
    disk = project / "built.qcow2"
    disk.write_bytes(b"a verified image")
    sha = ImageStore(project / ".bake" / "images", history).put(disk, "base")
    history.record_build("r1", Built("base", "d" * 64, "ami-0source", sha))
    history.record_verification("r1", "base", sha, "suites", True, "6.1.0-9", None, "3 passed")

    code, out, _ = bake(capsys, "status", "demo", "--json")

    assert code == 0
    published = images.published(cloud, "base")
    assert published is not None and json.loads(out)["image"]["published"] == published
    tags = images.tags_of(images.describe(cloud, published))
    assert (tags["bake:verified"], tags["bake:kernel"], tags["bake:run-id"]) == (
        "true",
        "6.1.0-9",
        "r1",
    )
    assert tags["bake:digest"] == "d" * 64
    cloud.client("ssm").delete_parameter(Name="/bake/images/base/latest")
    assert bake(capsys, "status", "demo")[0] == 0
    assert images.published(cloud, "base") is None, "an already seeded cloud is not republished"


def _dead_run(project: Path, subject: str, cloud) -> tuple[str, str]:
    history = History(project / ".bake" / "history.sqlite")
    run_id = history.start_run("swap", subject, "local")
    history._write("UPDATE runs SET pid = 999999999 WHERE run_id = ?", (run_id,))
    key = cloud.client("ec2").create_key_pair(KeyName=f"left-by-{run_id}")["KeyName"]
    history.record_resource(run_id, "verify", "key-pair", key)
    return run_id, key


def test_a_command_first_recovers_the_dead_runs_of_its_service(project: Path, capsys, cloud):
    run_id, key = _dead_run(project, "demo", cloud)
    other, other_key = _dead_run(project, "web", cloud)

    code, _, err = bake(capsys, "rollback", "demo")

    assert code == 1, "the rollback itself has nothing to roll back to"
    assert f"recovered key-pair {key} of run {run_id}" in err
    names = [pair["KeyName"] for pair in cloud.client("ec2").describe_key_pairs()["KeyPairs"]]
    assert names == [other_key], "only runs of this service are recovered first"
    statuses = {
        run.run_id: run.status for run in History(project / ".bake" / "history.sqlite").runs()
    }
    assert (statuses[run_id], statuses[other]) == ("abandoned", "interrupted")


def test_recover_releases_every_dead_run(project: Path, capsys, cloud) -> None:
    run_id, key = _dead_run(project, "web", cloud)
    code, out, _ = bake(capsys, "recover", "--dry-run")
    assert code == 0 and out.splitlines() == [
        f"would release key-pair {key} (run {run_id})",
        "1 abandoned run(s)",
    ]
    code, out, _ = bake(capsys, "recover", "--json")
    recovery = json.loads(out)
    assert code == 0 and recovery["runs"] == [run_id]
    assert recovery["released"] == [
        {"run_id": run_id, "kind": "key-pair", "id": key, "outcome": "released"}
    ]
    assert cloud.client("ec2").describe_key_pairs()["KeyPairs"] == []
