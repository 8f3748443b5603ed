"""`bake recover`: what a run that died left behind is released, what may carry traffic or is an
image is left with the reason, and the run is marked abandoned."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from contextlib import suppress
from pathlib import Path

import pytest

from bake.history import History
from bake.recover import Recoverer, abandoned
from bake.state import StateDir

DEAD_PID = 999_999_999


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state").ensure()


@pytest.fixture
def history(state: StateDir) -> History:
    return History(state.history_db)


def dead_run(history: History, subject: str = "base", command: str = "verify") -> str:
    run_id = history.start_run(command, subject, "aws")
    history._write("UPDATE runs SET pid = ? WHERE run_id = ?", (DEAD_PID, run_id))
    return run_id


def _verification_leftovers(cloud, history: History, run_id: str, base_ami: str) -> dict:
    ec2 = cloud.client("ec2")
    tags = [{"ResourceType": "instance", "Tags": [{"Key": "bake:run-id", "Value": run_id}]}]
    key = ec2.create_key_pair(KeyName=f"verify-{run_id}")["KeyName"]
    group = ec2.create_security_group(GroupName=f"verify-{run_id}", Description="verify")["GroupId"]
    instance = ec2.run_instances(
        ImageId=base_ami, MinCount=1, MaxCount=1, KeyName=key, SecurityGroupIds=[group]
    )["Instances"][0]["InstanceId"]
    builder = ec2.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1, TagSpecifications=tags)[
        "Instances"
    ][0]["InstanceId"]
    for kind, resource_id in (
        ("key-pair", key),
        ("security-group", group),
        ("instance", instance),
        ("ami", base_ami),
        ("auto-scaling-group", "demo-green"),
    ):
        history.record_resource(run_id, "verify", kind, resource_id)
    return {"key": key, "group": group, "instance": instance, "builder": builder}


def _state_of(cloud, instance_id: str) -> str:
    reservations = cloud.client("ec2").describe_instances(InstanceIds=[instance_id])
    return reservations["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_what_a_dead_verification_left_is_released(cloud, state, history, base_ami) -> None:
    run_id = dead_run(history)
    left = _verification_leftovers(cloud, history, run_id, base_ami)
    scratch = state.root / "work" / f"verify-base-{run_id}"
    scratch.mkdir(parents=True)

    recovery = Recoverer(lambda: cloud, history, state).recover(abandoned(history))

    assert recovery.runs == (run_id,)
    released = {(action.kind, action.id) for action in recovery.released}
    assert {
        ("key-pair", left["key"]),
        ("security-group", left["group"]),
        ("instance", left["instance"]),
        ("instance", left["builder"]),
        ("scratch", str(scratch)),
    } == released
    assert {(action.kind, action.id) for action in recovery.left} == {
        ("ami", base_ami),
        ("auto-scaling-group", "demo-green"),
    }
    ec2 = cloud.client("ec2")
    assert _state_of(cloud, left["instance"]) == _state_of(cloud, left["builder"]) == "terminated"
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert left["group"] not in [
        g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]
    ]
    assert not scratch.exists()
    (run,) = history.runs()
    assert (run.status, run.error) == ("abandoned", "its process was gone; recovered")
    assert abandoned(history) == []


def test_a_dry_run_changes_nothing(cloud, state, history, base_ami) -> None:
    run_id = dead_run(history)
    left = _verification_leftovers(cloud, history, run_id, base_ami)
    recovery = Recoverer(lambda: cloud, history, state).recover(abandoned(history), dry_run=True)
    assert ("key-pair", left["key"], "would be released") in {
        (a.kind, a.id, a.outcome) for a in recovery.released
    }
    assert _state_of(cloud, left["instance"]) == "running"
    assert history.runs()[0].status == "interrupted"


def test_a_launch_template_version_in_use_is_left(cloud, state, history, config, base_ami) -> None:
    from bake.local.seed import ensure_seeded

    ensure_seeded(cloud, config, base_ami)
    ec2 = cloud.client("ec2")
    template_id = ec2.describe_launch_templates()["LaunchTemplates"][0]["LaunchTemplateId"]
    unused = ec2.create_launch_template_version(
        LaunchTemplateId=template_id, LaunchTemplateData={"ImageId": base_ami}
    )["LaunchTemplateVersion"]["VersionNumber"]
    run_id = dead_run(history, "demo", "swap")
    for number in (1, unused):
        resource = f"{template_id}:{number}"
        history.record_resource(run_id, "launch-template", "launch-template-version", resource)

    recovery = Recoverer(lambda: cloud, history, state).recover(abandoned(history))

    outcomes = {a.id: a.outcome for a in (*recovery.left, *recovery.released)}
    assert outcomes[f"{template_id}:1"] == "an Auto Scaling group runs this version"
    # moto has no DeleteLaunchTemplateVersions: the unused version is tried, and said so
    assert outcomes[f"{template_id}:{unused}"] in (
        "released",
        *(outcome for outcome in outcomes.values() if outcome.startswith("the cloud refused")),
    )
    assert outcomes[f"{template_id}:{unused}"] != "an Auto Scaling group runs this version"


def _orphan_qemu(directory: Path) -> int:
    """`sleep` under QEMU's name, in `directory` (a machine's command line names its run), whose
    parent is gone, as a killed run leaves its machine: no child of this process."""
    directory.mkdir(parents=True)
    fake_qemu = directory / "qemu-system-x86_64"
    shutil.copy("/bin/sleep", fake_qemu)
    started = subprocess.run(
        ["sh", "-c", f"'{fake_qemu}' 300 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
    )
    return int(started.stdout)


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for init to reap it has stopped)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] != "Z"


def _kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_a_qemu_machine_of_a_dead_run_is_stopped_and_nothing_else(
    tmp_path: Path, cloud, state, history
) -> None:
    run_id = dead_run(history)
    machine = _orphan_qemu(tmp_path / f"verify-base-{run_id}")
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        history.record_resource(run_id, "verify", "qemu-machine", str(machine))
        history.record_resource(run_id, "verify", "qemu-machine", str(bystander.pid))
        assert _running(machine)

        recovery = Recoverer(lambda: cloud, history, state).recover(abandoned(history))

        assert not _running(machine), "recover said released before the machine was gone"
        assert bystander.poll() is None
        assert [a.outcome for a in recovery.left] == [
            f"pid {bystander.pid} is no longer a QEMU machine; left alone"
        ]
        assert ("qemu-machine", str(machine)) in {(a.kind, a.id) for a in recovery.released}
    finally:
        _kill(machine)
        bystander.kill()


def test_a_qemu_machine_of_another_run_on_a_reused_pid_is_left_alone(
    tmp_path: Path, cloud, state, history
) -> None:
    run_id = dead_run(history)
    other = _orphan_qemu(tmp_path / "verify-base-another-run")
    try:
        history.record_resource(run_id, "verify", "qemu-machine", str(other))

        recovery = Recoverer(lambda: cloud, history, state).recover(abandoned(history))

        assert _running(other)
        assert [a.outcome for a in recovery.left] == [
            f"pid {other} is a QEMU machine of another run now; left alone"
        ]
    finally:
        _kill(other)


def test_a_recovered_run_leaves_no_stage_running(cloud, state, history) -> None:
    run_id = dead_run(history)
    history.finish_stage(history.start_stage(run_id, "prepare"), "succeeded")
    history.start_stage(run_id, "verify")

    Recoverer(lambda: cloud, history, state).recover(abandoned(history))

    (run,) = history.runs()
    assert [(stage.name, stage.status) for stage in run.stages] == [
        ("prepare", "succeeded"),
        ("verify", "abandoned"),
    ]
    assert run.stages[1].finished is not None


def test_runs_that_are_alive_or_finished_are_not_abandoned(history) -> None:
    alive = history.start_run("build", "base", "local")
    finished = history.start_run("build", "base", "local")
    history.finish_run(finished, "failed", "boom")
    dead = dead_run(history)
    assert [run.run_id for run in abandoned(history)] == [dead]
    assert [run.run_id for run in abandoned(history, "web")] == []
    assert alive != dead
