"""Recovering after runs that died (SIGKILL, a lost machine): every resource such a run recorded
and nothing needs any more is released, the run is marked `abandoned`, and what could not be
removed safely is listed with the reason.

A run is abandoned when history still says it is running but its process is gone. What it left:
its verification instance, key pair and security group; its QEMU machines; Packer's build instance
(found by its `bake:run-id` tag); launch template versions nothing uses; its scratch directories.
Auto Scaling groups, target groups and AMIs are never removed here: a group may carry traffic (an
interrupted rollout is the next swap's to finish) and an image is retire's to judge.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from bake.aws import launch_templates
from bake.aws.errors import error_code
from bake.aws.session import Cloud
from bake.history import History, RunRecord
from bake.localhost import command_line
from bake.polling import wait_until, waiter_config
from bake.state import StateDir

# What is never removed by recover, and why.
KEPT = {
    "ami": "an image is kept; bake retire removes the unverified ones",
    "artifact": "an image is kept; bake retire removes the unverified ones",
    "retired-ami": "already retired",
    "auto-scaling-group": "a group may carry traffic; the next swap of the service finishes it",
    "target-group": "a target group may carry traffic; the next swap of the service finishes it",
}

# How long a killed QEMU machine may take to be gone before recover says it is still there.
QEMU_STOP_WAIT = 10.0


@dataclass(frozen=True)
class Action:
    """One resource of an abandoned run: released, or left and why."""

    run_id: str
    kind: str
    id: str
    outcome: str


@dataclass(frozen=True)
class Recovery:
    """What recovering the abandoned runs did (or, with dry_run, would do)."""

    runs: tuple[str, ...]
    released: tuple[Action, ...]
    left: tuple[Action, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def abandoned(history: History, subject: str | None = None) -> list[RunRecord]:
    """Runs that history says are running but whose process is gone (of `subject` when given)."""
    return [run for run in history.abandoned() if subject is None or run.subject == subject]


class Recoverer:
    """Releases what abandoned runs left, through the target's cloud and this host."""

    def __init__(self, cloud: Callable[[], Cloud], history: History, state: StateDir) -> None:
        self._cloud = cloud
        self.history = history
        self.state = state

    @property
    def cloud(self) -> Cloud:
        return self._cloud()

    def recover(self, runs: list[RunRecord], *, dry_run: bool = False) -> Recovery:
        released: list[Action] = []
        left: list[Action] = []
        for run in runs:
            done, kept = self._run(run, dry_run)
            released += done
            left += kept
            if not dry_run:
                why = "its process was gone; recovered"
                self.history.finish_running_stages(run.run_id, "abandoned", why)
                self.history.finish_run(run.run_id, "abandoned", why)
        return Recovery(tuple(run.run_id for run in runs), tuple(released), tuple(left))

    def _run(self, run: RunRecord, dry_run: bool) -> tuple[list[Action], list[Action]]:
        released: list[Action] = []
        left: list[Action] = []
        done = "would be released" if dry_run else "released"
        resources = [(resource.kind, resource.id) for resource in run.resources]
        resources += [("instance", found) for found in self._tagged_instances(run.run_id)]
        resources = list(dict.fromkeys(resources))
        # instances before the key pairs and security groups they use
        resources.sort(key=lambda item: item[0] not in ("instance", "qemu-machine"))
        for kind, resource_id in resources:
            if kind in KEPT:
                left.append(Action(run.run_id, kind, resource_id, KEPT[kind]))
                continue
            why = None if dry_run else self._release(run.run_id, kind, resource_id)
            target = left if why else released
            target.append(Action(run.run_id, kind, resource_id, why or done))
        for scratch in sorted((self.state.root / "work").glob(f"*-{run.run_id}")):
            if not dry_run:
                shutil.rmtree(scratch, ignore_errors=True)
            released.append(Action(run.run_id, "scratch", str(scratch), done))
        return released, left

    def _tagged_instances(self, run_id: str) -> list[str]:
        """Instances tagged with the run's id that still run: Packer's build instance, too."""
        reservations = self.cloud.client("ec2").describe_instances(
            Filters=[
                {"Name": "tag:bake:run-id", "Values": [run_id]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]},
            ]
        )["Reservations"]
        return [instance["InstanceId"] for r in reservations for instance in r["Instances"]]

    def _release(self, run_id: str, kind: str, resource_id: str) -> str | None:
        """Remove one resource of run `run_id`; None when it is gone, else why it was left."""
        releasers: dict[str, Callable[[str], str | None]] = {
            "instance": self._terminate,
            "key-pair": self._delete_key_pair,
            "security-group": self._delete_security_group,
            "launch-template-version": self._delete_unused_version,
            "qemu-machine": partial(_stop_qemu, run_id=run_id),
        }
        release = releasers.get(kind)
        if release is None:
            return f"recover does not know how to release a {kind}"
        try:
            return release(resource_id)
        except (ClientError, BotoCoreError, ResponseParserError) as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            return f"the cloud refused: {lines[0][:200]}"

    def _terminate(self, instance_id: str) -> str | None:
        ec2 = self.cloud.client("ec2")
        with suppress(ClientError):
            ec2.terminate_instances(InstanceIds=[instance_id])
            ec2.get_waiter("instance_terminated").wait(
                InstanceIds=[instance_id], WaiterConfig=waiter_config(600)
            )
        return None

    def _delete_key_pair(self, name: str) -> str | None:
        self.cloud.client("ec2").delete_key_pair(KeyName=name)
        return None

    def _delete_security_group(self, group_id: str) -> str | None:
        try:
            self.cloud.client("ec2").delete_security_group(GroupId=group_id)
        except ClientError as exc:
            if error_code(exc) == "InvalidGroup.NotFound":
                return None
            raise
        return None

    def _delete_unused_version(self, resource_id: str) -> str | None:
        template_id, _, number = resource_id.partition(":")
        in_use = _versions_in_use(self.cloud, template_id)
        if int(number) in in_use or "$Latest" in in_use:
            return "an Auto Scaling group runs this version"
        try:
            launch_templates.delete_version(self.cloud, template_id, int(number))
        except ClientError as exc:
            code = error_code(exc)
            if "NotFound" in code:
                return None
            raise
        return None


def _versions_in_use(cloud: Cloud, template_id: str) -> set[int | str]:
    """The versions of a launch template that Auto Scaling groups name ($Default read as its
    number)."""
    used: set[int | str] = set()
    paginator = cloud.client("autoscaling").get_paginator("describe_auto_scaling_groups")
    for page in paginator.paginate():
        for group in page["AutoScalingGroups"]:
            template = group.get("LaunchTemplate") or {}
            if template.get("LaunchTemplateId") != template_id:
                continue
            version = str(template.get("Version") or "$Default")
            if version == "$Default":
                default = launch_templates.version(cloud, template_id, "$Default")
                version = str(default["VersionNumber"])
            used.add(int(version) if version.isdigit() else version)
    return used


def _stop_qemu(pid_text: str, run_id: str) -> str | None:
    """Stop the run's QEMU machine and wait until it is gone.

    Only a QEMU process whose command line names the run (its overlay and console log live under
    the run's id) is stopped: after a reboot or a long while the pid may belong to another
    person's machine.
    """
    pid = int(pid_text)
    command = command_line(pid)
    if command is None:
        return None
    if b"qemu-system" not in command:
        return f"pid {pid} is no longer a QEMU machine; left alone"
    if run_id.encode() not in command:
        return f"pid {pid} is a QEMU machine of another run now; left alone"
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_until(lambda: command_line(pid) is None, QEMU_STOP_WAIT, 0.1):
        return f"pid {pid} did not stop within {QEMU_STOP_WAIT:.0f}s of SIGKILL"
    return None
