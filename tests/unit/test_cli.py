"""The CLI contract: bad input is one line on stderr, exit code 2, and nothing touched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bake.cli import main
from bake.history import History

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
[images.base]
base = "debian:bookworm"
steps = ["patch", "harden", "lineage"]
verify = ["serverspec_tests/base"]

[services.demo]
image = "base"
capacity = 2
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "packer", tmp_path / "packer")
    shutil.copytree(REPO / "serverspec_tests", tmp_path / "serverspec_tests")
    (tmp_path / "bake.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BAKE_CONFIG", raising=False)
    monkeypatch.delenv("BAKE_STATE_DIR", raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["build", "web"], "unknown image 'web'"),
        (["verify", "web"], "unknown image 'web'"),
        (["bake-and-swap", "shop"], "unknown service 'shop'"),
        (["status", "shop"], "unknown service 'shop'"),
        (["swap", "shop", "--ami", "ami-1"], "unknown service 'shop'"),
        (["rollback", "shop"], "unknown service 'shop'"),
        (["launch"], "No such command 'launch'"),
        (["build"], "Missing argument 'IMAGE'"),
        (["--config", "nowhere.toml", "build", "base"], "no config file at"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(project: Path, capsys, args, expected) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert expected in err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert not (project / ".bake").exists(), "bad input must not create state"


def test_malformed_config_names_file_and_key(project: Path, capsys) -> None:
    (project / "bake.toml").write_text(CONFIG.replace("capacity = 2", 'capacity = "two"'))
    code, _, err = run(capsys, "bake-and-swap", "demo")
    assert code == 2
    assert f"{project / 'bake.toml'}: services.demo.capacity" in err
    assert not (project / ".bake").exists()


def test_a_verify_path_that_does_not_exist(project: Path, capsys) -> None:
    (project / "bake.toml").write_text(
        CONFIG.replace("serverspec_tests/base", "serverspec_tests/gone")
    )
    code, _, err = run(capsys, "verify", "base")
    assert code == 2
    assert "images.base.verify: 'serverspec_tests/gone' does not exist" in err


def test_iam_policy_with_a_bad_chef_client_stops_at_load(project: Path, capsys) -> None:
    chef = '{ chef = { run_list = ["recipe[golden_web]"], client = "omnitruck" } }'
    (project / "bake.toml").write_text(
        CONFIG.replace('steps = ["patch", "harden", "lineage"]', f"steps = [{chef}]")
    )
    code, out, err = run(capsys, "iam-policy")
    assert code == 2 and out == ""
    assert "images.base.steps[0] (chef): client must be a table" in err
    assert "internal error" not in err and err.count("\n") == 1


def test_no_traceback_without_debug_and_one_with_it(project: Path, capsys) -> None:
    (project / "bake.toml").write_text("[images.base\n")
    code, _, err = run(capsys, "build", "base")
    assert code == 2 and "Traceback" not in err
    code, _, err = run(capsys, "--debug", "build", "base")
    assert code == 2 and "Traceback" in err


def test_history_json_lists_runs_with_stage_timings(project: Path, capsys) -> None:
    history = History(project / ".bake" / "history.sqlite")
    run_id = history.start_run("build", "base", "local")
    stage = history.start_stage(run_id, "render")
    history.finish_stage(stage, "succeeded", "ok", {"template": "x"})
    history.set_run_ami(run_id, "ami-0abc")
    history.finish_run(run_id, "succeeded")
    code, out, _ = run(capsys, "history", "--json")
    assert code == 0
    (entry,) = json.loads(out)
    assert set(entry) == {
        "run_id", "command", "subject", "target", "status", "ami", "error",
        "started", "finished", "seconds", "stages", "resources",
    }  # fmt: skip
    assert (entry["run_id"], entry["status"], entry["ami"]) == (run_id, "succeeded", "ami-0abc")
    (stage_entry,) = entry["stages"]
    assert set(stage_entry) == {
        "name", "status", "started", "finished", "seconds", "detail", "outputs",
    }  # fmt: skip
    assert stage_entry["name"] == "render" and stage_entry["seconds"] is not None
    assert stage_entry["outputs"] == {"template": "x"}


def test_local_status_when_nothing_runs(project: Path, capsys) -> None:
    code, out, _ = run(capsys, "local", "status", "--json")
    assert code == 0
    status = json.loads(out)
    assert status["running"] is False


def test_help_lists_every_command(capsys) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in (
        "render",
        "build",
        "verify",
        "register",
        "swap",
        "rollback",
        "bake-and-swap",
        "status",
        "history",
        "local",
        "doctor",
    ):
        assert f"  {command}" in out


def test_local_status_for_people_names_each_url_and_lists_the_machines() -> None:
    from bake.cli import describe_local

    machine = {
        "instance_id": "i-0a1", "service": "demo", "color": "green", "ami": "ami-0w",
        "pid": 4242, "ssh_port": 40001, "http_port": 40002, "state": "running",
        "health": "healthy",
    }  # fmt: skip
    info = {
        "running": True, "endpoint": "http://127.0.0.1:5000", "region": "us-east-1", "pid": 7,
        "data_plane": {"running": True}, "services": {"demo": {"url": "http://127.0.0.1:8080/"}},
        "machines": [machine, {**machine, "instance_id": "i-0b22", "pid": None, "state": "failed",
                               "health": None}],
    }  # fmt: skip

    lines = describe_local(info).splitlines()

    assert lines[:2] == [
        "local cloud running at http://127.0.0.1:5000 (us-east-1, pid 7)",
        "service demo at http://127.0.0.1:8080/",
    ]
    assert lines[2].split() == [
        "instance_id", "service", "color", "ami", "pid", "ssh_port", "http_port", "state",
        "health",
    ]  # fmt: skip
    assert lines[3].split() == [
        "i-0a1", "demo", "green", "ami-0w", "4242", "40001", "40002", "running", "healthy"
    ]  # fmt: skip
    assert lines[4].split()[4] == "-" and lines[4].split()[-2:] == ["failed", "-"]
    assert lines[3].index("green") == lines[2].index("color"), "the columns line up"
    stopped = describe_local({**info, "data_plane": {"running": False}, "machines": []})
    assert "data plane not running" in stopped and stopped.endswith("no machines")
    assert describe_local({**info, "running": False}) == "local cloud not running"
