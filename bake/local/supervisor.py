"""The local data plane's supervisor: a process that outlives commands, as the moto server does,
and makes what the local cloud holds real.

About once a second it reads the configured services from the local cloud (their Auto Scaling
groups' instances, their target groups and what is registered in them, the listener's forward
weights) and reconciles: a QEMU machine for every instance (`machines.Fleet`), HAProxy following
the listeners and target groups (`haproxy.HAProxy`), and HAProxy's health checks reported back as
the target groups' target health (through the moto server's health file). It writes what it runs
to `dataplane.json`, which `bake local status` shows. Started by `bake local up` (and by every
command that prepares the local target). SIGHUP makes it follow the config its record
(`supervisor.json`) names now, in place: a service added or removed changes HAProxy through a
seamless reload, and the other services keep their frontends, so they refuse no connection.
SIGTERM stops it and HAProxy, and leaves the machines to the next supervisor or to
`bake local down`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bake import bluegreen, localhost, ssh
from bake import config as config_module
from bake.aws import elbv2, launch_templates
from bake.aws.session import Cloud
from bake.aws.tags import tags_of
from bake.config import COLORS, Config
from bake.errors import BakeError
from bake.history import History
from bake.local import haproxy, haproxy_config, qemu
from bake.local.cloud import health_file
from bake.local.machines import Fleet, Instance, Machine
from bake.local.store import ImageStore
from bake.runner import Runner
from bake.state import StateDir

MODULE = "bake.local.supervisor"
STATUS_NAME = "dataplane.json"
RECORD_NAME = "supervisor.json"
PORTS_NAME = "ports.json"
INTERVAL = 1.0
# HAProxy's check results that passed ("DOWN 1/2" with one of these is on its way up).
PASSED_CHECKS = {"L4OK", "L6OK", "L7OK"}
# Lifecycle states of an Auto Scaling group's instance that keep its machine.
KEPT = {"Pending", "Pending:Wait", "Pending:Proceed", "InService", "Standby", "EnteringStandby"}


@dataclass(frozen=True)
class TargetGroupView:
    """A target group as the local cloud holds it: its health check and registered instances."""

    name: str
    arn: str
    health: haproxy_config.HealthCheck
    registered: frozenset[str]


@dataclass(frozen=True)
class View:
    """What the data plane follows: every instance of the services' groups that should run,
    their target groups, and each service's forward weights by target group name."""

    instances: dict[str, Instance]
    target_groups: dict[str, TargetGroupView]
    weights: dict[str, dict[str, int]]


def target_group_names(config: Config) -> list[str]:
    """Both colours' target groups of every service, in config order."""
    return [
        service.names(color).target_group
        for service in config.services.values()
        for color in COLORS
    ]


def _target_groups(cloud: Cloud, names: list[str]) -> dict[str, TargetGroupView]:
    elb = cloud.client("elbv2")
    found: dict[str, TargetGroupView] = {}
    for page in elb.get_paginator("describe_target_groups").paginate():
        for group in page["TargetGroups"]:
            name = group["TargetGroupName"]
            if name not in names:
                continue
            described = elb.describe_target_health(TargetGroupArn=group["TargetGroupArn"])
            registered = frozenset(
                entry["Target"]["Id"] for entry in described["TargetHealthDescriptions"]
            )
            found[name] = TargetGroupView(
                name,
                group["TargetGroupArn"],
                haproxy_config.HealthCheck.from_target_group(group),
                registered,
            )
    return found


def _instances(cloud: Cloud, config: Config) -> dict[str, Instance]:
    owners = {
        service.names(color).asg: (service.name, color)
        for service in config.services.values()
        for color in COLORS
    }
    groups = cloud.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=list(owners)
    )["AutoScalingGroups"]
    members = {
        instance["InstanceId"]: (
            *owners[group["AutoScalingGroupName"]],
            group.get("LaunchTemplate"),
        )
        for group in groups
        for instance in group.get("Instances", [])
        if instance["LifecycleState"] in KEPT
    }
    if not members:
        return {}
    reservations = cloud.client("ec2").describe_instances(InstanceIds=list(members))
    instances = {}
    for reservation in reservations["Reservations"]:
        for described in reservation["Instances"]:
            if described["State"]["Name"] not in ("pending", "running"):
                continue
            instance_id = described["InstanceId"]
            service, color, template = members[instance_id]
            tags = tags_of(described)
            template = template or {
                "LaunchTemplateId": tags.get("aws:ec2launchtemplate:id", ""),
                "Version": tags.get("aws:ec2launchtemplate:version", ""),
            }
            launched = described.get("LaunchTime")
            instances[instance_id] = Instance(
                instance_id,
                service,
                color,
                described["ImageId"],
                instance_type=described.get("InstanceType", "t3.micro"),
                availability_zone=described.get("Placement", {}).get("AvailabilityZone", ""),
                private_ip=described.get("PrivateIpAddress") or qemu.METADATA_GUEST,
                launched=launched.strftime("%Y-%m-%dT%H:%M:%SZ") if launched else "",
                launch_template_id=template.get("LaunchTemplateId", ""),
                launch_template_version=str(template.get("Version", "")),
            )
    return instances


def _weights(cloud: Cloud, config: Config, arns: dict[str, str]) -> dict[str, dict[str, int]]:
    """Service -> target group name -> weight in the forward action of its listener (or rule)."""
    names = {arn: name for name, arn in arns.items()}
    weights: dict[str, dict[str, int]] = {}
    for service in config.services.values():
        try:
            _, actions = bluegreen.find_switch(cloud, service)
        except BakeError:
            weights[service.name] = {}  # not seeded yet
            continue
        weights[service.name] = {
            names[arn]: weight
            for arn, weight in elbv2.forward_weights(actions).items()
            if arn in names
        }
    return weights


def observe(cloud: Cloud, config: Config) -> View:
    """Read what the data plane follows from the local cloud."""
    target_groups = _target_groups(cloud, target_group_names(config))
    arns = {name: group.arn for name, group in target_groups.items()}
    return View(_instances(cloud, config), target_groups, _weights(cloud, config, arns))


def launched_from(
    cloud: Cloud, instance: Instance, cache: dict[tuple[str, str], dict[str, Any]]
) -> Instance:
    """`instance` with the user data, metadata options and instance profile of the launch template
    version it runs:
    its group's pinned version (a group is emptied before it moves to another version), else the
    version EC2 tagged the instance with."""
    import base64

    key = (instance.launch_template_id, instance.launch_template_version)
    if not all(key):
        return instance
    if key not in cache:
        cache[key] = launch_templates.version(cloud, *key)["LaunchTemplateData"]
    data = cache[key]
    options = data.get("MetadataOptions") or {}
    user_data = data.get("UserData")
    profile = data.get("IamInstanceProfile") or {}
    # The profile's role; the local cloud's profiles hold a role of their own name.
    role = profile.get("Name") or profile.get("Arn", "").rpartition("/")[2]
    return replace(
        instance,
        user_data=base64.b64decode(user_data) if user_data else None,
        iam_role=role,
        http_tokens=options.get("HttpTokens", "optional"),
        http_endpoint=options.get("HttpEndpoint", "enabled"),
    )


def frontend_ports(state: StateDir, services: list[str], taken: set[int]) -> dict[str, int]:
    """A port on 127.0.0.1 for each service's frontend, kept across restarts (the service's URL
    stays the same) unless something else took it."""
    path = state.local / PORTS_NAME
    try:
        recorded = {key: int(value) for key, value in json.loads(path.read_text()).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        recorded = {}
    ports = {}
    for service in services:
        port = recorded.get(service)
        if port is None or not (port in taken or _free(port)):
            port = localhost.free_port()
        ports[service] = port
    path.write_text(json.dumps({**recorded, **ports}, indent=2) + "\n", encoding="utf-8")
    return ports


def _free(port: int) -> bool:
    """Whether a listener could bind `port` now. SO_REUSEADDR, as HAProxy binds: connections
    of an earlier listener in TIME_WAIT (after a load test) do not make the port taken."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def write_json(path: Path, payload: Any) -> None:
    """Write `payload` to `path` in one step: readers see the old file or the new one."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Supervisor:
    """One reconciliation of the data plane per `step()`."""

    def __init__(
        self,
        config: Config,
        state: StateDir,
        cloud: Cloud,
        fleet: Fleet,
        balancer: haproxy.HAProxy,
        ports: dict[str, int],
        log: Any,
        digest: str = "",
    ) -> None:
        self.config = config
        self.digest = digest
        self.state = state
        self.cloud = cloud
        self.fleet = fleet
        self.balancer = balancer
        self.ports = ports
        self.log = log
        self.started = _now()
        self.ever_up: set[tuple[str, str]] = set()
        self.said: dict[tuple[str, str], str] = {}
        self.problem = ""
        self.view = View({}, {}, {})
        self.health: dict[tuple[str, str], haproxy.ServerHealth] = {}

    def desired(self, view: View, leaving: set[str]) -> haproxy_config.Desired:
        """HAProxy's state for this view: machines that are leaving are left out (drained)."""
        frontends = tuple(
            haproxy_config.Frontend(
                service.name,
                self.ports[service.name],
                view.weights.get(service.name, {}),
                tuple(service.names(color).target_group for color in COLORS),
            )
            for service in self.config.services.values()
        )
        backends = []
        for name in target_group_names(self.config):
            group = view.target_groups.get(name)
            servers = []
            for instance_id in sorted(group.registered if group else ()):
                machine = self.fleet.machines.get(instance_id)
                if (
                    instance_id in view.instances
                    and instance_id not in leaving
                    and machine is not None
                    and machine.http_port
                ):
                    servers.append(haproxy_config.Server(instance_id, machine.http_port))
            health = group.health if group else haproxy_config.HealthCheck()
            backends.append(haproxy_config.Backend(name, health, tuple(servers)))
        return haproxy_config.Desired(frontends, tuple(backends))

    def start(self) -> None:
        """Start HAProxy with the services' frontends and say so, before the first step."""
        self.balancer.start(self.desired(self.view, set()))
        write_json(self.state.local / STATUS_NAME, self.status(running=True))

    def reconfigure(self, config: Config, digest: str) -> None:
        """Follow `config` from the next step on: services it adds get frontends (on their
        recorded ports when free), services it drops lose theirs and their machines are stopped,
        and the services both name keep their ports, so their URLs answer throughout."""
        held = set(self.ports.values())
        self.ports = frontend_ports(self.state, list(config.services), held)
        self.config = config
        self.digest = digest
        self.log(
            f"following {config.path}: "
            + ", ".join(f"{name} on 127.0.0.1:{port}" for name, port in self.ports.items())
        )

    def step(self) -> None:
        view = observe(self.cloud, self.config)
        self.view = view
        self.fleet.refresh()
        templates: dict[tuple[str, str], dict[str, Any]] = {}
        for instance_id, instance in view.instances.items():
            if instance_id not in self.fleet.machines:
                self.fleet.start(launched_from(self.cloud, instance, templates))
        leaving = set(self.fleet.machines) - set(view.instances)
        try:
            self.balancer.apply(self.desired(view, leaving))
        except BakeError as exc:  # the health HAProxy reports is still worth writing
            self.complain(f"HAProxy: {exc}")
        draining = {server for _, server in self.balancer.draining()}
        for instance_id in leaving - draining - self.fleet.stopping():
            self.log(f"{instance_id}: the instance left its group; stopping its machine")
            self.fleet.stop_later(instance_id)
        self.health = self.balancer.health()
        write_json(health_file(self.state), self.health_report(view))
        write_json(self.state.local / STATUS_NAME, self.status(running=True))

    def complain(self, problem: str) -> None:
        """Log a problem once, not at every step it lasts."""
        if problem != self.problem:
            self.log(problem)
        self.problem = problem

    def health_report(self, view: View) -> dict[str, Any]:
        """Target health by target group name and instance id, as HAProxy sees it."""
        groups: dict[str, dict[str, dict[str, str]]] = {}
        for name in target_group_names(self.config):
            answers: dict[str, dict[str, str]] = {}
            group = view.target_groups.get(name)
            for instance_id in group.registered if group else ():
                machine = self.fleet.machines.get(instance_id)
                seen = self.health.get((name, instance_id))
                if machine is not None and machine.state == "failed":
                    answers[instance_id] = {
                        "State": "unhealthy",
                        "Reason": "Target.FailedHealthChecks",
                        "Description": f"its machine could not start: {machine.error}",
                    }
                elif seen is not None:
                    answers[instance_id] = self.target_health(name, instance_id, seen)
            groups[name] = answers
            for instance_id, answer in answers.items():
                self._say_changes(name, instance_id, answer)
        return {"updated": time.time(), "target_groups": groups}

    def _say_changes(self, target_group: str, instance_id: str, answer: dict[str, str]) -> None:
        """Log a target's health when it changes, with how long its machine has run."""
        key = (target_group, instance_id)
        if self.said.get(key) == answer["State"]:
            return
        self.said[key] = answer["State"]
        machine = self.fleet.machines.get(instance_id)
        since = ""
        if machine is not None and machine.started:
            started = datetime.strptime(machine.started, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            since = (
                f", {(datetime.now(UTC) - started).total_seconds():.0f}s after its machine started"
            )
        reason = (
            f" ({answer['Reason']}: {answer.get('Description', '')})" if "Reason" in answer else ""
        )
        self.log(f"{instance_id}: {answer['State']} in {target_group}{since}{reason}")

    def target_health(
        self, target_group: str, instance_id: str, seen: haproxy.ServerHealth
    ) -> dict[str, str]:
        """AWS's answer for what HAProxy sees: a target is `initial` until it was healthy once
        or its machine is up (then failing checks make it `unhealthy`, as on AWS; passing ones
        that have not reached the healthy threshold keep it `initial`)."""
        if seen.up:
            self.ever_up.add((target_group, instance_id))
        machine = self.fleet.machines.get(instance_id)
        rising = seen.status.startswith("DOWN ") and seen.check_status in PASSED_CHECKS
        checked = (target_group, instance_id) in self.ever_up or (
            machine is not None and machine.state in ("running", "dead") and not rising
        )
        return seen.target_health(ever_up=checked)

    def machine_entry(self, machine: Machine) -> dict[str, Any]:
        entry = machine.to_dict()
        service = self.config.services.get(machine.service)
        if service is None:  # a service taken out of the config: its machines are stopped
            return {**entry, "target_group": None, "health": None}
        target_group = service.names(machine.color).target_group
        seen = self.health.get((target_group, machine.instance_id))
        entry["target_group"] = target_group
        entry["health"] = (
            self.target_health(target_group, machine.instance_id, seen)["State"] if seen else None
        )
        return entry

    def status(self, *, running: bool) -> dict[str, Any]:
        services = {}
        for service in self.config.services.values():
            port = self.ports[service.name]
            services[service.name] = {
                "url": f"http://127.0.0.1:{port}/",
                "port": port,
                "load_balancer": service.load_balancer,
                "weights": self.view.weights.get(service.name, {}),
            }
        return {
            "running": running,
            "pid": os.getpid(),
            "started": self.started,
            "updated": _now(),
            "endpoint": self.cloud.endpoint_url,
            "state_dir": str(self.state.root),
            "config": str(self.config.path),
            "digest": self.digest,
            "haproxy": {"pid": self.balancer.pid, "directory": str(self.balancer.directory)},
            "services": services,
            "machines": [self.machine_entry(m) for m in list(self.fleet.machines.values())],
        }


def follow_record(supervisor: Supervisor) -> None:
    """Reconfigure for the config and digest the record names now (a command wrote them before
    it sent SIGHUP); a config that cannot be read is logged and the current one kept."""
    path = supervisor.state.local / RECORD_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        config = config_module.load(Path(record["config"]))
    except (OSError, ValueError, KeyError, TypeError, BakeError) as exc:
        supervisor.complain(f"cannot follow the config in {path}: {exc}")
        return
    supervisor.reconfigure(config, str(record.get("digest", "")))


def _logger() -> Any:
    lock = threading.Lock()

    def log(line: str) -> None:
        with lock:
            print(f"{datetime.now(UTC).strftime('%H:%M:%S')} {line}", flush=True)

    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description="The local data plane.")
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--digest", default="", help="what the starting command planned for")
    args = parser.parse_args(argv)
    log = _logger()
    stop, follow, wake = threading.Event(), threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        wake.set()

    def on_hangup(signum: int, _frame: FrameType | None) -> None:
        follow.set()
        wake.set()

    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)

    config = config_module.load(args.config)
    state = StateDir(args.state).ensure()
    runner = Runner()
    settings = config.local
    cloud = Cloud(settings.region, endpoint_url=args.endpoint)
    key, _ = ssh.ensure_keypair(runner, state.ssh)
    fleet = Fleet(
        runner,
        state,
        settings,
        ImageStore(state.store, History(state.history_db)),
        accelerator=qemu.choose_accelerator(runner, state.local, settings.accelerator),
        key=key,
        region=settings.region,
        log=log,
    )
    fleet.load()
    balancer = haproxy.HAProxy(runner, state.local / "haproxy")
    balancer.stop_stale()
    ports = frontend_ports(state, list(config.services), set())
    supervisor = Supervisor(config, state, cloud, fleet, balancer, ports, log, args.digest)
    supervisor.start()
    log(f"data plane up: {', '.join(f'{n} on 127.0.0.1:{p}' for n, p in ports.items())}")
    try:
        while not stop.is_set():
            followed = follow.is_set()
            if followed:
                follow.clear()
                follow_record(supervisor)
            try:
                supervisor.step()
                supervisor.problem = ""
            except (BakeError, BotoCoreError, ClientError, OSError) as exc:
                supervisor.complain(f"cannot reconcile: {exc}")
            except Exception:  # a bug: keep the machines and HAProxy going, say it once
                supervisor.complain("cannot reconcile:\n" + traceback.format_exc())
            if followed:  # the command that asked waits for the digest, even after a failed step
                write_json(state.local / STATUS_NAME, supervisor.status(running=True))
            wake.wait(INTERVAL)
            wake.clear()
    finally:
        balancer.stop()
        write_json(state.local / STATUS_NAME, supervisor.status(running=False))
        log("data plane stopped; machines left running for the next supervisor or `local down`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
