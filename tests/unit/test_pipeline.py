"""The pipeline: stage order as data, history of every run and stage, undo on failure, locks."""

from __future__ import annotations

import io
import multiprocessing
import signal
import subprocess
import sys
from dataclasses import make_dataclass
from pathlib import Path

import pytest

from bake import config, locks, pipeline
from bake.console import Console
from bake.context import RunContext
from bake.errors import Cancelled, LockHeld, StageFailed
from bake.history import History, ResourceRecord
from bake.records import Record
from bake.stages.base import Outcome, Stage
from bake.state import StateDir
from tests.unit.fakes import FakeRunner
from tests.unit.flock_waiters import until_waiting_for_flock


class RecordingTarget:
    name = "local"

    def __init__(self) -> None:
        self.prepared = 0

    def prepare(self, machines: bool = True) -> None:
        self.prepared += 1


def make_context(tmp_path: Path) -> RunContext:
    (tmp_path / "suites").mkdir(exist_ok=True)
    loaded = config.from_dict(
        {"images": {"base": {"base": "debian:bookworm", "steps": [], "verify": ["suites"]}}},
        tmp_path / "bake.toml",
    )
    state = StateDir(tmp_path / "state").ensure()
    return RunContext(
        loaded,
        state,
        History(state.history_db),
        FakeRunner(),
        RecordingTarget(),
        Console(quiet=True),
        image=loaded.images["base"],
    )


def stage(
    name: str, log: list[str], *, fails: BaseException | None = None, skip: bool = False
) -> type[Stage]:
    made = make_dataclass(f"Made{name.title()}", [(name, str)], bases=(Record,), frozen=True)

    class Recorded(Stage):
        def run(self) -> Outcome:
            log.append(f"run {name}")
            if fails is not None:
                raise fails
            if skip:
                return Outcome.skipped("already done", made("kept"))
            return Outcome.done("did it", made("made"))

        def undo(self) -> None:
            log.append(f"undo {name}")

    Recorded.name = name
    return Recorded


@pytest.fixture
def sequence(monkeypatch: pytest.MonkeyPatch):
    def install(*stages: type[Stage]) -> None:
        for item in stages:
            monkeypatch.setitem(pipeline.STAGES, item.name, item)
        monkeypatch.setitem(pipeline.SEQUENCES, "test", [item.name for item in stages])

    return install


def test_the_order_of_stages_is_data() -> None:
    assert pipeline.SEQUENCES["bake-and-swap"] == [
        "render",
        "prepare",
        "build",
        "verify",
        "register",
        "rollout",
        "launch-template",
        "green-asg",
        "shift",
    ]
    assert pipeline.SEQUENCES["swap"] == [
        "prepare",
        "rollout",
        "launch-template",
        "green-asg",
        "shift",
    ]
    for names in pipeline.SEQUENCES.values():
        assert all(name in pipeline.STAGES for name in names)
        if "render" in names and "prepare" in names:
            assert names.index("render") < names.index("prepare"), "render must come first"


def test_stages_run_in_order_and_every_one_is_recorded(tmp_path: Path, sequence) -> None:
    log: list[str] = []
    sequence(stage("render", log), stage("one", log), stage("two", log, skip=True))
    ctx = make_context(tmp_path)
    result = pipeline.execute(ctx, "test")
    assert log == ["run render", "run one", "run two"]
    assert result.status == "succeeded"
    assert result.to_dict()["one"] == "made" and result.to_dict()["two"] == "kept"
    (run,) = ctx.history.runs()
    assert run.status == "succeeded" and run.command == "test" and run.subject == "base"
    assert [(s.name, s.status) for s in run.stages] == [
        ("render", "succeeded"),
        ("one", "succeeded"),
        ("two", "skipped"),
    ]
    assert all(s.seconds is not None for s in run.stages)


def test_prepare_readies_the_target(tmp_path: Path, sequence) -> None:
    from bake.stages.prepare import Prepare

    log: list[str] = []
    sequence(stage("render", log), Prepare, stage("one", log))
    ctx = make_context(tmp_path)
    pipeline.execute(ctx, "test")
    assert ctx.target.prepared == 1
    assert [s.name for s in ctx.history.runs()[0].stages] == ["render", "prepare", "one"]


def test_bad_input_in_render_prepares_nothing(tmp_path: Path, sequence) -> None:
    from bake.errors import InputError
    from bake.stages.prepare import Prepare

    log: list[str] = []
    sequence(stage("render", log, fails=InputError("bad template")), Prepare, stage("one", log))
    ctx = make_context(tmp_path)
    with pytest.raises(InputError):
        pipeline.execute(ctx, "test")
    assert ctx.target.prepared == 0
    assert log == ["run render", "undo render"]


def test_a_failing_stage_is_undone_and_later_stages_never_run(tmp_path: Path, sequence) -> None:
    log: list[str] = []
    sequence(
        stage("one", log), stage("two", log, fails=StageFailed("two", "broke")), stage("three", log)
    )
    ctx = make_context(tmp_path)
    with pytest.raises(StageFailed):
        pipeline.execute(ctx, "test")
    assert log == ["run one", "run two", "undo two"]
    (run,) = ctx.history.runs()
    assert run.status == "failed"
    assert run.error == "two: broke"
    assert [(s.name, s.status) for s in run.stages] == [
        ("one", "succeeded"),
        ("two", "failed"),
    ]


@pytest.mark.parametrize(
    "stop", [KeyboardInterrupt(), Cancelled(signal.SIGTERM), Cancelled(signal.SIGHUP)]
)
def test_ctrl_c_and_stop_signals_undo_the_stage_in_progress(
    tmp_path: Path, sequence, stop: BaseException
) -> None:
    log: list[str] = []
    sequence(stage("one", log, fails=stop), stage("two", log))
    ctx = make_context(tmp_path)
    with pytest.raises(type(stop)):
        pipeline.execute(ctx, "test")
    assert log == ["run one", "undo one"]
    (run,) = ctx.history.runs()
    assert run.status == "cancelled"
    assert run.stages[0].status == "cancelled"


def test_resources_are_recorded_under_their_stage(tmp_path: Path, sequence) -> None:
    class Creates(Stage):
        name = "creates"

        def run(self) -> Outcome:
            self.ctx.record_resource("auto-scaling-group", "demo-green")
            raise StageFailed("creates", "then failed")

    sequence(Creates)
    ctx = make_context(tmp_path)
    with pytest.raises(StageFailed):
        pipeline.execute(ctx, "test")
    (run,) = ctx.history.runs()
    assert run.resources == (ResourceRecord("creates", "auto-scaling-group", "demo-green"),)


def test_lock_names(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    assert pipeline.lock_names(ctx, "build") == ["image-base"]
    ctx.service = config.from_dict(
        {
            "images": {"base": {"base": "debian:bookworm", "steps": [], "verify": ["suites"]}},
            "services": {"demo": {"image": "base", "capacity": 1}},
        },
        tmp_path / "bake.toml",
    ).services["demo"]
    assert pipeline.lock_names(ctx, "bake-and-swap") == ["service-demo", "image-base"]
    assert pipeline.lock_names(ctx, "rollback") == ["service-demo"]


def _hold_lock(directory: str, ready, release) -> None:
    with locks.hold(Path(directory), "service-demo", "bake bake-and-swap (pid test)"):
        ready.set()
        release.wait(10)


def test_a_second_run_on_a_locked_service_gets_lock_held(tmp_path: Path) -> None:
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        with (
            pytest.raises(LockHeld, match="service-demo is locked by bake bake-and-swap") as raised,
            locks.hold(tmp_path, "service-demo", "second"),
        ):
            pass
        assert raised.value.exit_code == 3
    finally:
        release.set()
        holder.join(10)
    with locks.hold(tmp_path, "service-demo", "third"):
        assert (tmp_path / "service-demo.lock").read_text() == "third"


def test_history_marks_runs_of_dead_processes_interrupted(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    run_id = history.start_run("build", "base", "local")
    history._write("UPDATE runs SET pid = 999999999 WHERE run_id = ?", (run_id,))
    assert history.runs()[0].status == "interrupted"


def test_a_waiting_lock_lets_the_second_holder_in_after_the_first(tmp_path: Path) -> None:
    import threading

    order: list[str] = []
    second_done = threading.Event()

    def second() -> None:
        with locks.waiting(tmp_path, "base-disk-x"):
            order.append("second in")
        second_done.set()

    with locks.waiting(tmp_path, "base-disk-x"):
        order.append("first in")
        thread = threading.Thread(target=second)
        thread.start()
        until_waiting_for_flock()
        assert not second_done.is_set()
        with pytest.raises(LockHeld):
            locks.hold(tmp_path, "base-disk-x", "a run that must not wait").__enter__()
        order.append("first out")
    thread.join(10)
    assert order == ["first in", "first out", "second in"]


def test_an_undo_that_fails_never_hides_the_failure_it_undid(tmp_path: Path, sequence) -> None:
    class BreaksTwice(Stage):
        name = "breaks"

        def run(self) -> Outcome:
            raise StageFailed("breaks", "the real problem")

        def undo(self) -> None:
            raise RuntimeError("and the undo broke too")

    sequence(BreaksTwice)
    ctx = make_context(tmp_path)
    stream = io.StringIO()
    ctx.console = Console(stream)
    both = "breaks: the real problem; undo failed too: and the undo broke too"
    with pytest.raises(StageFailed, match="the real problem") as failure:
        pipeline.execute(ctx, "test")
    assert failure.value.format_message() == both
    assert "breaks: undo failed too: and the undo broke too" in stream.getvalue()
    (run,) = ctx.history.runs()
    assert (run.status, run.error) == ("failed", both)
    assert [(stage.name, stage.status, stage.detail) for stage in run.stages] == [
        ("breaks", "failed", both)
    ]


def test_every_stage_name_loads_the_stage_of_that_name() -> None:
    for name in pipeline.STAGES.paths:
        assert pipeline.STAGES[name].name == name


def test_a_swap_loads_no_stage_that_renders_or_builds() -> None:
    code = (
        "import sys\n"
        "from bake import app, pipeline\n"
        "for name in pipeline.SEQUENCES['swap']:\n"
        "    pipeline.STAGES[name]\n"
        "print(sorted(m for m in ('jinja2', 'hcl2', 'cyclonedx') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
