"""Starting the local data plane: what its machines need of the host's memory (checked before
anything starts), and when a running supervisor must be restarted for a changed config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bake.cli import main
from bake.config import from_dict
from bake.errors import InputError
from bake.local import dataplane
from bake.local.machines import QEMU_OVERHEAD
from bake.state import StateDir

REPO = Path(__file__).resolve().parents[2]


def config_of(tmp_path: Path, services: dict, **local) -> object:
    (tmp_path / "suites").mkdir(exist_ok=True)
    raw = {
        "local": local,
        "images": {"base": {"base": "debian:bookworm", "steps": [], "verify": ["suites"]}},
        "services": {name: {"image": "base", **body} for name, body in services.items()},
    }
    return from_dict(raw, tmp_path / "bake.toml")


def meminfo(tmp_path: Path, available_mib: int) -> Path:
    path = tmp_path / "meminfo"
    path.write_text(
        f"MemTotal:       99999999 kB\nMemFree:         1000 kB\n"
        f"MemAvailable:   {available_mib * 1024} kB\n"
    )
    return path


def test_the_need_is_both_colours_of_every_service_and_a_build_machine(tmp_path) -> None:
    config = config_of(
        tmp_path,
        {"demo": {"capacity": 2}, "shop": {"capacity": {"min": 1, "desired": 3, "max": 6}}},
        machine_memory=256,
        memory=1024,
    )
    need = dataplane.memory_need(config)

    assert need.machines == 2 * 2 + 2 * 3
    assert need.per_machine == 256 + QEMU_OVERHEAD
    assert need.build == 1024 + dataplane.BUILD_OVERHEAD
    assert need.total == 10 * (256 + QEMU_OVERHEAD) + 1024 + dataplane.BUILD_OVERHEAD


def test_machines_that_fit_pass_and_one_mib_short_is_refused(tmp_path) -> None:
    config = config_of(tmp_path, {"demo": {"capacity": 2}})
    state = StateDir(tmp_path / "state").ensure()
    need = dataplane.memory_need(config).total

    dataplane.check_memory(config, state, meminfo(tmp_path, need))
    with pytest.raises(InputError) as refused:
        dataplane.check_memory(config, state, meminfo(tmp_path, need - 1))

    assert refused.value.exit_code == 2
    message = refused.value.format_message()
    assert f"need {need} MiB" in message and f"has {need - 1} MiB available" in message
    assert "demo: 2 colours x 2" in message and "machine_memory" in message


def test_the_digest_follows_services_and_machines_not_rollout_settings(tmp_path) -> None:
    base = dataplane.plan_digest(config_of(tmp_path, {"demo": {"capacity": 2}}))

    assert base == dataplane.plan_digest(
        config_of(tmp_path, {"demo": {"capacity": 3, "soak": "1m", "shift_steps": [50, 100]}})
    )
    assert base != dataplane.plan_digest(config_of(tmp_path, {"shop": {"capacity": 2}}))
    assert base != dataplane.plan_digest(
        config_of(tmp_path, {"demo": {"capacity": 2, "listener_port": 8080}})
    )
    assert base != dataplane.plan_digest(
        config_of(tmp_path, {"demo": {"capacity": 2}}, machine_memory=512)
    )


def test_local_up_without_the_memory_exits_2_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    shutil.copytree(REPO / "serverspec_tests", tmp_path / "serverspec_tests")
    (tmp_path / "bake.toml").write_text(
        '[images.base]\nbase = "debian:bookworm"\nsteps = ["patch"]\n'
        'verify = ["serverspec_tests/base"]\n\n'
        '[services.demo]\nimage = "base"\ncapacity = { min = 1, desired = 500, max = 500 }\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BAKE_CONFIG", raising=False)
    monkeypatch.delenv("BAKE_STATE_DIR", raising=False)

    code = main(["local", "up"])
    err = capsys.readouterr().err

    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: the local machines need ")
    assert "1000 machines" in err
    assert not (tmp_path / ".bake" / "local" / "cloud.json").exists()
    assert not (tmp_path / ".bake" / "images").exists() or not any(
        (tmp_path / ".bake" / "images").iterdir()
    ), "no base disk was built"
    code = main(["--json", "local", "status"])
    status = json.loads(capsys.readouterr().out)
    assert (code, status["running"], status["machines"]) == (0, False, [])


# A supervisor's stand-in: on SIGHUP it reports the digest its record names, as the supervisor
# does once it follows that record's config (`follows` = 0: it ignores SIGHUP).
STAND_IN = """
import json, os, signal, sys, time
from pathlib import Path
local = Path(sys.argv[3]) / "local"
def follow(signum, frame):
    record = json.loads((local / "supervisor.json").read_text())
    status = json.loads((local / "dataplane.json").read_text())
    (local / "dataplane.json").write_text(json.dumps({**status, "digest": record["digest"]}))
signal.signal(signal.SIGHUP, follow if sys.argv[1] == "1" else signal.SIG_IGN)
(local / f"ready-{os.getpid()}").touch()
time.sleep(120)
"""


class StandIns:
    """Sleeping processes whose command lines read as a supervisor of a state directory."""

    def __init__(self) -> None:
        self.started: list = []
        self.follows = True

    def spawn(self, state: StateDir):
        import subprocess
        import sys
        import time

        process = subprocess.Popen(
            [sys.executable, "-c", STAND_IN, str(int(self.follows)), dataplane.MODULE,
             str(state.root)],
            start_new_session=True,
        )  # fmt: skip
        self.started.append(process)
        ready = state.local / f"ready-{process.pid}"
        deadline = time.monotonic() + 10
        while not ready.exists():  # its SIGHUP handler is in place
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return process


@pytest.fixture
def stand_ins():
    made = StandIns()
    yield made
    for process in made.started:
        process.kill()
        process.wait()


@pytest.fixture
def supervisors(tmp_path, stand_ins, monkeypatch):
    """A runner whose spawned supervisors are stand-ins that report themselves running."""
    from tests.unit.fakes import FakeRunner

    monkeypatch.setattr(dataplane, "available_memory", lambda meminfo=None: 10**6)
    state = StateDir(tmp_path / "state").ensure()

    class Supervisors(FakeRunner):
        spawned: list[list[str]] = []

        def spawn(self, argv, *, log_path, env=None, cwd=None):
            self.spawned.append([str(a) for a in argv])
            digest = argv[argv.index("--digest") + 1]
            (state.local / "dataplane.json").write_text(
                json.dumps(
                    {"running": True, "digest": digest, "services": {"demo": {"url": "http://x/"}}}
                )
            )
            return stand_ins.spawn(state)

    runner = Supervisors()
    runner.spawned = []
    return runner, state


def test_up_starts_a_supervisor_once_and_has_it_follow_a_changed_service_list(
    tmp_path, supervisors, stand_ins
) -> None:
    runner, state = supervisors
    lines: list[str] = []
    demo = config_of(tmp_path, {"demo": {"capacity": 2}})

    record = dataplane.up(runner, state, demo, "http://127.0.0.1:5000", lines.append)

    (argv,) = runner.spawned
    assert argv[argv.index("--state") + 1] == str(state.root)
    assert argv[argv.index("--endpoint") + 1] == "http://127.0.0.1:5000"
    assert argv[argv.index("--digest") + 1] == dataplane.plan_digest(demo)
    assert record["digest"] == dataplane.plan_digest(demo)
    assert record["config"] == str(demo.path)
    assert dataplane.running(state)["pid"] == record["pid"]
    assert lines == ["    local data plane: demo at http://x/"]

    dataplane.up(runner, state, config_of(tmp_path, {"demo": {"capacity": 3}}), record["endpoint"])
    assert len(runner.spawned) == 1, "the same services on the same cloud keep their supervisor"

    (tmp_path / "fleet").mkdir()
    fleet = config_of(tmp_path / "fleet", {"demo": {"capacity": 2}, "shop": {"capacity": 1}})
    followed = dataplane.up(runner, state, fleet, record["endpoint"])
    assert len(runner.spawned) == 1, "another service is followed, not restarted for"
    assert followed["pid"] == record["pid"] and stand_ins.started[0].poll() is None
    assert dataplane.running(state)["config"] == str(fleet.path)
    assert json.loads((state.local / "dataplane.json").read_text())["digest"] == (
        dataplane.plan_digest(fleet)
    )

    dataplane.up(runner, state, config_of(tmp_path, {"demo": {"capacity": 2}}, machine_memory=512),
                 record["endpoint"])  # fmt: skip
    assert len(runner.spawned) == 2, "other machine settings need another supervisor"
    assert stand_ins.started[0].wait(timeout=20) is not None, "the old supervisor was stopped"

    dataplane.up(runner, state, config_of(tmp_path, {"demo": {"capacity": 2}}, machine_memory=512),
                 "http://other")  # fmt: skip
    assert len(runner.spawned) == 3, "a restarted cloud needs another supervisor"


def test_a_supervisor_that_does_not_follow_is_restarted(
    tmp_path, supervisors, stand_ins, monkeypatch
) -> None:
    runner, state = supervisors
    monkeypatch.setattr(dataplane, "FOLLOW_TIMEOUT", 1.0)
    stand_ins.follows = False
    lines: list[str] = []
    record = dataplane.up(runner, state, config_of(tmp_path, {"demo": {"capacity": 1}}), "e")

    dataplane.up(runner, state, config_of(tmp_path, {"shop": {"capacity": 1}}), "e", lines.append)

    assert len(runner.spawned) == 2
    assert stand_ins.started[0].wait(timeout=20) is not None
    assert dataplane.running(state)["pid"] != record["pid"]
    assert "did not follow the config; restarting" in lines[0]


def test_a_supervisor_that_does_not_come_up_is_an_error_naming_its_log(tmp_path) -> None:
    from tests.unit.fakes import FakeRunner

    state = StateDir(tmp_path / "state").ensure()
    runner = FakeRunner().on(lambda argv: dataplane.MODULE in argv, exits=1)
    demo = config_of(tmp_path, {"demo": {"capacity": 1}})

    with pytest.raises(dataplane.BakeError) as failed:
        dataplane.up(runner, state, demo, "http://127.0.0.1:5000")

    assert "did not start" in str(failed.value) and "supervisor.log" in str(failed.value)
