"""A swap killed at any point, then run again, never touches the colour that carries traffic.

The swap runs on the aws target against the session's moto server, in a forked process so that it
can really be killed with SIGKILL. It is killed just before each of its cloud calls in turn (every
one of them: a clean run is counted first), and rerun. Before every cloud call of both runs, an
observer with its own clients reads the listener, the groups and the target health, and checks the
invariants against what it saw before the previous call:

- a colour that carried traffic was not scaled in, emptied, or moved to another launch template
  version (an alias such as `$Latest` is read as the number it means);
- a colour that carries traffic has InService instances, all healthy targets;
- blue, live before the rollout and its rollback target, keeps its capacity, version and instances.

After the rerun green takes all traffic on the new AMI and the rollout is recorded `live`.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from bake.aws.session import LOCAL_CREDENTIALS, Cloud
from bake.cli import main
from bake.config import load
from bake.history import History
from bake.local.seed import ensure_seeded
from tests.integration.aws_project import write_config

COLORS = ("blue", "green")
READS = ("Describe", "Get", "List")


@dataclass(frozen=True)
class Group:
    sizes: tuple[int, int, int]
    version: int
    in_service: tuple[str, ...]
    healthy: tuple[str, ...]


@dataclass(frozen=True)
class Seen:
    """The service as an observer outside the toolkit reads it."""

    weights: dict[str, int]
    groups: dict[str, Group | None]
    rollout: str | None


class Observer:
    """Reads the service with plain boto3 clients of its own (no hooks on them)."""

    def __init__(self, endpoint: str) -> None:
        session = boto3.Session(region_name="us-east-1", **LOCAL_CREDENTIALS)
        self.elb = session.client("elbv2", endpoint_url=endpoint)
        self.asg = session.client("autoscaling", endpoint_url=endpoint)
        self.ec2 = session.client("ec2", endpoint_url=endpoint)

    def seen(self) -> Seen:
        (balancer,) = self.elb.describe_load_balancers(Names=["demo"])["LoadBalancers"]
        (listener,) = self.elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])[
            "Listeners"
        ]
        names = {
            group["TargetGroupArn"]: group["TargetGroupName"]
            for group in self.elb.describe_target_groups()["TargetGroups"]
        }
        weights = dict.fromkeys(COLORS, 0)
        for action in listener["DefaultActions"]:
            for target in action.get("ForwardConfig", {}).get("TargetGroups", []):
                weights[names[target["TargetGroupArn"]].removeprefix("demo-")] = target["Weight"]
        tags = self.elb.describe_tags(ResourceArns=[balancer["LoadBalancerArn"]])
        rollout = next(
            (
                t["Value"]
                for t in tags["TagDescriptions"][0]["Tags"]
                if t["Key"].startswith("bake:")
            ),
            None,
        )
        groups = {
            group["AutoScalingGroupName"].removeprefix("demo-"): group
            for group in self.asg.describe_auto_scaling_groups(
                AutoScalingGroupNames=["demo-blue", "demo-green"]
            )["AutoScalingGroups"]
        }
        arns = {name.removeprefix("demo-"): arn for arn, name in names.items()}
        return Seen(
            weights,
            {color: self._group(groups.get(color), arns.get(color)) for color in COLORS},
            rollout,
        )

    def _group(self, group: dict[str, Any] | None, target_group: str | None) -> Group | None:
        if group is None:
            return None
        template = group["LaunchTemplate"]
        version = template["Version"]
        if not version.isdigit():
            (described,) = self.ec2.describe_launch_templates(
                LaunchTemplateIds=[template["LaunchTemplateId"]]
            )["LaunchTemplates"]
            key = "LatestVersionNumber" if version == "$Latest" else "DefaultVersionNumber"
            version = described[key]
        in_service = tuple(
            sorted(
                i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "InService"
            )
        )
        healthy: tuple[str, ...] = ()
        if target_group:
            described = self.elb.describe_target_health(TargetGroupArn=target_group)
            healthy = tuple(
                sorted(
                    entry["Target"]["Id"]
                    for entry in described["TargetHealthDescriptions"]
                    if entry["TargetHealth"]["State"] == "healthy"
                )
            )
        sizes = (group["MinSize"], group["DesiredCapacity"], group["MaxSize"])
        return Group(sizes, int(version), in_service, healthy)

    def images(self, instance_ids: tuple[str, ...]) -> set[str]:
        reservations = self.ec2.describe_instances(InstanceIds=list(instance_ids))["Reservations"]
        return {i["ImageId"] for r in reservations for i in r["Instances"]}


def violations(before: Seen, now: Seen, blue_at_start: Group) -> list[str]:
    """What broke the invariants between two observations one cloud call apart."""
    found = []
    for color in COLORS:
        old, new = before.groups[color], now.groups[color]
        if before.weights[color] and old is not None:
            if new is None:
                found.append(f"{color} carried traffic and its group was deleted")
            elif new.version != old.version:
                found.append(f"{color} carried traffic and moved to version {new.version}")
            elif any(n < o for n, o in zip(new.sizes, old.sizes, strict=True)):
                found.append(f"{color} carried traffic and was scaled in to {new.sizes}")
            elif not set(old.in_service) <= set(new.in_service):
                found.append(f"{color} carried traffic and lost instances")
        if now.weights[color]:
            if new is None or not new.in_service:
                found.append(f"{color} gets traffic without InService instances")
            elif not set(new.in_service) <= set(new.healthy):
                found.append(f"{color} gets traffic with unhealthy instances")
    if now.groups["blue"] != blue_at_start:
        found.append(f"blue, the rollback target, changed: {now.groups['blue']}")
    return found


class Watch:
    """Counts a run's cloud calls; before each, checks the invariants, writes what it found to
    `report` (the run may be killed next), and kills the run at call `kill_at`."""

    def __init__(self, project: Project, report: Path, kill_at: int | None = None) -> None:
        self.observer = Observer(project.endpoint)
        self.report = report
        self.kill_at = kill_at
        self.calls: list[str] = []
        self.broken: list[str] = []
        self.last = self.observer.seen()
        self.blue_at_start = self.last.groups["blue"]
        self.before: Callable[[Watch, str], None] | None = None

    def before_call(self, model: Any, **_: Any) -> None:
        self.look()
        if self.before:
            self.before(self, model.name)
        self.calls.append(model.name)
        if len(self.calls) == self.kill_at:
            self.write()
            os.kill(os.getpid(), signal.SIGKILL)

    def look(self) -> None:
        """Check the invariants after the last call; only a call that changes something can
        break one, so reads are not followed by a look."""
        if self.calls and not self.calls[-1].startswith(READS):
            now = self.observer.seen()
            self.broken += [
                f"after call {len(self.calls)} ({self.calls[-1]}): {broken}"
                for broken in violations(self.last, now, self.blue_at_start)
            ]
            self.last = now
            self.write()

    def write(self) -> None:
        self.report.write_text(json.dumps({"calls": self.calls, "broken": self.broken}))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Hook every client the run makes."""
        original = Cloud.client

        def client(cloud: Cloud, service: str) -> Any:
            fresh = service not in cloud._clients
            made = original(cloud, service)
            if fresh:
                made.meta.events.register("before-call", self.before_call)
            return made

        monkeypatch.setattr(Cloud, "client", client)


@dataclass
class Project:
    """A service on moto, blue live on the old AMI, and a state directory of its own."""

    config: Path
    endpoint: str
    old_ami: str
    new_ami: str

    @property
    def observer(self) -> Observer:
        return Observer(self.endpoint)

    def swap(
        self,
        monkeypatch: pytest.MonkeyPatch,
        report: Path,
        *,
        kill_at: int | None = None,
        ami: str | None = None,
        before: Callable[[Watch, str], None] | None = None,
    ) -> int:
        """`bake swap demo --ami AMI` in a forked process, watched; its exit status (negative:
        the signal that killed it). Its calls and broken invariants are in `report`."""
        pid = os.fork()
        if pid == 0:  # the child
            code = 99
            try:
                watch = Watch(self, report, kill_at)
                watch.before = before
                watch.install(monkeypatch)
                code = main(
                    ["--config", str(self.config), "swap", "demo", "--ami", ami or self.new_ami]
                )
                watch.look()
                watch.write()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def finished(self) -> None:
        """Green takes all traffic on the new AMI, and the rollout is recorded live."""
        seen = self.observer.seen()
        assert seen.weights == {"blue": 0, "green": 100}
        green = seen.groups["green"]
        assert green is not None and green.in_service
        assert self.observer.images(green.in_service) == {self.new_ami}
        assert seen.rollout is not None and "state=live" in seen.rollout


def reported(report: Path) -> dict[str, Any]:
    return json.loads(report.read_text())


def make_project(root: Path, endpoint: str, **service: Any) -> Project:
    """Empty moto, then seed the service with blue live on a verified AMI."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    root.mkdir(parents=True)
    config_path = write_config(root, endpoint)
    extra = {"shift_steps": [50, 100], "shift_interval": 1, **service}
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in extra.items())
    config_path.write_text(config_path.read_text() + lines)
    cloud = Cloud("us-east-1", endpoint_url=endpoint)
    ec2 = cloud.client("ec2")
    amis = [
        ec2.register_image(Name=name, Architecture="x86_64", RootDeviceName="/dev/xvda")["ImageId"]
        for name in ("goldenbake-base-1", "goldenbake-base-2")
    ]
    ec2.create_tags(
        Resources=amis,
        Tags=[{"Key": "bake:verified", "Value": "true"}, {"Key": "bake:image", "Value": "base"}],
    )
    ensure_seeded(cloud, load(config_path), amis[0])
    return Project(config_path, endpoint, *amis)


# The kill points are dealt out to this many tests, so that `make test`'s workers share them;
# together they kill the swap before every one of its calls.
SHARDS = 4


@pytest.mark.parametrize("shard", range(SHARDS))
def test_a_swap_killed_before_any_of_its_cloud_calls_is_finished_safely_by_a_rerun(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, shard: int
) -> None:
    """Calls number 1 + shard, 1 + shard + SHARDS, ... of a clean swap, each killed in turn."""
    clean = make_project(tmp_path / "clean", moto_endpoint)
    assert clean.swap(monkeypatch, tmp_path / "clean.json") == 0
    calls = reported(tmp_path / "clean.json")["calls"]
    assert reported(tmp_path / "clean.json")["broken"] == []
    clean.finished()
    assert {"ModifyListener", "CreateAutoScalingGroup", "AddTags"} <= set(calls)
    failures = []
    for kill_at in range(1 + shard, len(calls) + 1, SHARDS):
        project = make_project(tmp_path / f"kill-{kill_at}", moto_endpoint)
        killed, rerun = tmp_path / f"killed-{kill_at}.json", tmp_path / f"rerun-{kill_at}.json"
        where = f"killed before call {kill_at} ({calls[kill_at - 1]})"
        try:
            assert project.swap(monkeypatch, killed, kill_at=kill_at) == -signal.SIGKILL
            assert project.swap(monkeypatch, rerun) == 0, "the rerun failed"
            assert reported(killed)["broken"] + reported(rerun)["broken"] == []
            project.finished()
        except AssertionError as failure:
            failures.append(f"{where}: {failure}")
    assert failures == [], "\n".join(failures)


def test_a_swap_in_one_step_makes_at_most_25_cloud_calls(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service's defaults (one shift step, no soak) and an AMI named on the command line.
    project = make_project(tmp_path / "one", moto_endpoint, shift_steps=[100])
    assert project.swap(monkeypatch, tmp_path / "one.json") == 0
    project.finished()
    calls = reported(tmp_path / "one.json")["calls"]

    assert len(calls) <= 25, "\n".join(calls)
    writes = [name for name in calls if not name.startswith(READS)]
    assert writes == [
        "AddTags",  # the rollout, recorded before anything changes
        "CreateLaunchTemplateVersion",
        "CreateTargetGroup",
        "CreateAutoScalingGroup",
        "ModifyListener",
        "AddTags",  # the rollout, live
    ]


def _after_first_shift_step(action: Callable[[], None]) -> Callable[[Watch, str], None]:
    """A `before` hook that acts once traffic first moved (the 50/50 step), before the next call."""

    def before(watch: Watch, _name: str) -> None:
        if watch.calls.count("ModifyListener") == 1:
            action()

    return before


def bake(project: Project, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`bake ARGS` in this process: its exit code, and its result (stdout) or its error line."""
    capsys.readouterr()
    code = main(["--config", str(project.config), *args])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    return code, captured.out if code == 0 else "\n".join(errors)


def test_killed_at_50_50_status_tells_and_only_a_resume_or_a_rollback_is_taken(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    project = make_project(tmp_path / "p", moto_endpoint)
    blue_before = project.observer.seen().groups["blue"]
    kill = _after_first_shift_step(lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert project.swap(monkeypatch, tmp_path / "killed.json", before=kill) == -signal.SIGKILL
    assert reported(tmp_path / "killed.json")["broken"] == []
    assert project.observer.seen().weights == {"blue": 50, "green": 50}

    code, out = bake(project, capsys, "status", "demo", "--json")
    rollout = json.loads(out)["rollout"]
    assert code == 0
    assert (rollout["state"], rollout["incoming"], rollout["rollback"]) == (
        "rolling",
        "green",
        "blue",
    )
    assert rollout["ami"] == project.new_ami and rollout["rollback_ami"] == project.old_ami
    assert "green 50%, blue 50%" in rollout["summary"]
    assert f"--ami {project.new_ami}` resumes it" in rollout["next"]

    third = project.observer.ec2.register_image(
        Name="goldenbake-base-3", Architecture="x86_64", RootDeviceName="/dev/xvda"
    )["ImageId"]
    project.observer.ec2.create_tags(
        Resources=[third],
        Tags=[{"Key": "bake:verified", "Value": "true"}, {"Key": "bake:image", "Value": "base"}],
    )
    code, out = bake(project, capsys, "swap", "demo", "--ami", third)
    assert code == 2
    assert "green carries 50% of the traffic; refusing to start a rollout of" in out
    assert project.observer.seen().weights == {"blue": 50, "green": 50}

    assert project.swap(monkeypatch, tmp_path / "rerun.json") == 0
    assert reported(tmp_path / "rerun.json")["broken"] == []
    project.finished()
    assert project.observer.seen().groups["blue"] == blue_before


def test_rollback_after_a_kill_at_50_50_goes_to_the_old_colour_and_never_forward(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    project = make_project(tmp_path / "p", moto_endpoint, shift_steps=[10, 100])
    kill = _after_first_shift_step(lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert project.swap(monkeypatch, tmp_path / "killed.json", before=kill) == -signal.SIGKILL
    seen = project.observer.seen()
    assert seen.weights == {"blue": 90, "green": 10}
    green_before = seen.groups["green"]

    code, out = bake(project, capsys, "rollback", "demo")
    assert (code, out.strip()) == (0, f"demo: blue is live again on {project.old_ami}")
    seen = project.observer.seen()
    assert seen.weights == {"blue": 100, "green": 0}
    assert seen.groups["green"] == green_before, "the rollback left green as it was"
    assert seen.rollout is not None and "state=rolled-back" in seen.rollout

    code, out = bake(project, capsys, "rollback", "demo")
    assert code == 2 and "would roll forward" in out
    assert project.observer.seen().weights == {"blue": 100, "green": 0}


def test_a_sigterm_during_the_shift_sends_traffic_back_and_records_the_run_cancelled(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "p", moto_endpoint)
    stop = _after_first_shift_step(lambda: os.kill(os.getpid(), signal.SIGTERM))

    assert project.swap(monkeypatch, tmp_path / "stopped.json", before=stop) == 128 + 15

    assert reported(tmp_path / "stopped.json")["broken"] == []
    seen = project.observer.seen()
    assert seen.weights == {"blue": 100, "green": 0}
    assert seen.rollout is not None and "state=rolled-back" in seen.rollout
    (run,) = History(tmp_path / "p" / "state" / "history.sqlite").runs()
    assert run.status == "cancelled"
    assert {stage.name: stage.status for stage in run.stages}["shift"] == "cancelled"
    entry = History(tmp_path / "p" / "state" / "history.sqlite").rollout("demo")
    assert entry is not None and entry.rollout.state == "rolled-back"


def test_swapping_in_the_live_ami_is_a_no_op_even_when_killed_and_rerun(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    project = make_project(tmp_path / "p", moto_endpoint)
    assert project.swap(monkeypatch, tmp_path / "first.json") == 0
    before = project.observer.seen()
    assert before.weights == {"blue": 0, "green": 100}

    code, out = bake(project, capsys, "swap", "demo", "--ami", project.new_ami)
    assert code == 0
    assert f"already live: green runs {project.new_ami}; nothing changed" in out
    calls = None
    for kill_at in range(1, 100):
        report = tmp_path / f"same-{kill_at}.json"
        status = project.swap(monkeypatch, report, kill_at=kill_at)
        assert reported(report)["broken"] == []
        assert project.observer.seen() == before, f"killed before call {kill_at}"
        if status == 0:
            calls = kill_at - 1
            break
        assert status == -signal.SIGKILL
    assert calls, "the no-op swap makes cloud calls, each one was a kill point"
