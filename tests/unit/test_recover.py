"""`bake recover`: what a run that died left behind is released, what may carry traffic or is an
image is left with the reason, and the run is marked abandoned."""

from __future__ import annotations

import shutil
import subprocess
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
    assert ("key-pair", left["key"]) in {(a.kind, a.id) for a in recovery.released}
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


def test_a_qemu_machine_of_a_dead_run_is_stopped_and_nothing_else(
    tmp_path: Path, cloud, state, history
) -> None:
    fake_qemu = tmp_path / "qemu-system-x86_64"
    shutil.copy("/bin/sleep", fake_qemu)
    machine = subprocess.Popen([str(fake_qemu), "300"])
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        run_id = dead_run(history)
        history.record_resource(run_id, "verify", "qemu-machine", str(machine.pid))
        history.record_resource(run_id, "verify", "qemu-machine", str(bystander.pid))

        recovery = Recoverer(lambda: cloud, history, state).recover(abandoned(history))

        assert machine.wait(10) == -9
        assert bystander.poll() is None
        assert [a.outcome for a in recovery.left] == [
            f"pid {bystander.pid} is no longer a QEMU machine; left alone"
        ]
    finally:
        machine.kill()
        bystander.kill()


def test_runs_that_are_alive_or_finished_are_not_abandoned(history) -> None:
    alive = history.start_run("build", "base", "local")
    finished = history.start_run("build", "base", "local")
    history.finish_run(finished, "failed", "boom")
    dead = dead_run(history)
    assert [run.run_id for run in abandoned(history)] == [dead]
    assert [run.run_id for run in abandoned(history, "web")] == []
    assert alive != dead
