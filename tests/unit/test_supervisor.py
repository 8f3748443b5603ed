"""The supervisor's reconciliation against the test's moto server: what it reads of a service (its
groups' instances, target groups, forward weights), the machines it starts and stops, what it asks
of HAProxy, and the target health it reports back. The machines and HAProxy are stood in for (their
own tests run them for real)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bake.aws import autoscaling, elbv2, launch_templates
from bake.local import haproxy, haproxy_config, supervisor
from bake.local.machines import Instance, Machine
from bake.local.seed import ensure_seeded
from bake.state import StateDir


@dataclass
class FakeFleet:
    machines: dict[str, Machine] = field(default_factory=dict)
    started: list[Instance] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def refresh(self) -> list[Machine]:
        return []

    def start(self, instance: Instance) -> Machine:
        self.started.append(instance)
        port = 20000 + len(self.started)
        machine = Machine(
            instance.instance_id, instance.service, instance.color, instance.ami, "/m",
            pid=len(self.started), ssh_port=port, http_port=port + 1000,
        )  # fmt: skip
        self.machines[instance.instance_id] = machine
        return machine

    def stop_later(self, instance_id: str) -> None:
        self.stopped.append(instance_id)

    def stopping(self) -> set[str]:
        return set(self.stopped)


@dataclass
class FakeBalancer:
    directory: Path = Path("/lb")
    pid: int = 7
    applied: list[haproxy_config.Desired] = field(default_factory=list)
    seen: dict[tuple[str, str], haproxy.ServerHealth] = field(default_factory=dict)
    drains: set[tuple[str, str]] = field(default_factory=set)

    def start(self, desired: haproxy_config.Desired) -> None:
        self.applied.append(desired)

    def apply(self, desired: haproxy_config.Desired) -> None:
        self.applied.append(desired)

    def health(self) -> dict[tuple[str, str], haproxy.ServerHealth]:
        return self.seen

    def draining(self) -> set[tuple[str, str]]:
        return self.drains


def seen(backend: str, server: str, status: str, check: str = "L7OK") -> haproxy.ServerHealth:
    return haproxy.ServerHealth(backend, server, status, check, "200", "", 0)


@pytest.fixture
def seeded(cloud, config, base_ami):
    ensure_seeded(cloud, config, base_ami)
    return cloud


@pytest.fixture
def plane(seeded, config, tmp_path: Path):
    state = StateDir(tmp_path / ".bake").ensure()
    fleet, balancer = FakeFleet(), FakeBalancer()
    made = supervisor.Supervisor(
        config,
        state,
        seeded,
        fleet,
        balancer,
        {"demo": 18080},
        lambda line: None,  # type: ignore[arg-type]
    )
    return made


def blue_instances(cloud) -> list[str]:
    return autoscaling.in_service(autoscaling.find_group(cloud, "demo-blue") or {})


def test_observe_reads_instances_target_groups_and_weights(seeded, config, base_ami) -> None:
    view = supervisor.observe(seeded, config)

    ids = blue_instances(seeded)
    assert len(ids) == 2 and set(view.instances) == set(ids)
    first = view.instances[ids[0]]
    assert (first.service, first.color, first.ami) == ("demo", "blue", base_ami)
    assert first.launch_template_id.startswith("lt-") and first.launch_template_version == "1"
    (group,) = view.target_groups.values()
    assert group.name == "demo-blue" and group.registered == frozenset(ids)
    assert group.health == haproxy_config.HealthCheck(
        path="/health", matcher="200", interval=5, timeout=3, healthy=2, unhealthy=2
    )
    assert view.weights == {"demo": {"demo-blue": 100}}


def test_an_instance_runs_its_groups_launch_template_user_data_and_tokens(seeded, config) -> None:
    view = supervisor.observe(seeded, config)
    instance = next(iter(view.instances.values()))
    template = launch_templates.version(seeded, instance.launch_template_id, "1")
    data = {**template["LaunchTemplateData"], "UserData": base64.b64encode(b"release=7").decode()}
    data["MetadataOptions"] = {"HttpTokens": "required", "HttpEndpoint": "enabled"}
    number = launch_templates.create_version(seeded, instance.launch_template_id, data, "test")
    pinned = Instance(**{**instance.__dict__, "launch_template_version": str(number)})

    launched = supervisor.launched_from(seeded, pinned, {})

    assert launched.user_data == b"release=7"
    assert (launched.http_tokens, launched.http_endpoint) == ("required", "enabled")
    assert launched.iam_role == "goldenbake-local", "the seeded profile's role"
    assert supervisor.launched_from(seeded, instance, {}).user_data is None


def test_a_step_starts_a_machine_per_instance_and_puts_them_behind_their_target_group(
    plane,
) -> None:
    plane.step()

    ids = sorted(blue_instances(plane.cloud))
    assert sorted(i.instance_id for i in plane.fleet.started) == ids
    desired = plane.balancer.applied[-1]
    (frontend,) = desired.frontends
    assert (frontend.name, frontend.port, frontend.weights) == ("demo", 18080, {"demo-blue": 100})
    assert frontend.target_groups == ("demo-blue", "demo-green")
    backends = {backend.name: backend for backend in desired.backends}
    assert set(backends) == {"demo-blue", "demo-green"}
    assert [s.name for s in backends["demo-blue"].servers] == ids
    assert [s.port for s in backends["demo-blue"].servers] == [
        plane.fleet.machines[i].http_port for i in ids
    ]
    assert backends["demo-green"].servers == ()
    status = json.loads((plane.state.local / "dataplane.json").read_text())
    assert status["services"]["demo"]["url"] == "http://127.0.0.1:18080/"
    assert {m["instance_id"] for m in status["machines"]} == set(ids)
    plane.step()
    assert len(plane.fleet.started) == 2, "a machine is started once"


def test_the_health_haproxy_sees_is_the_target_health_moto_is_told(plane) -> None:
    plane.step()
    up, down = sorted(blue_instances(plane.cloud))
    plane.balancer.seen = {
        ("demo-blue", up): seen("demo-blue", up, "UP"),
        ("demo-blue", down): seen("demo-blue", down, "DOWN", "L7STS"),
    }
    plane.step()
    report = json.loads((plane.state.local / "health.json").read_text())["target_groups"]
    assert report["demo-blue"][up] == {"State": "healthy"}
    assert report["demo-blue"][down]["State"] == "initial", "its machine is still booting"

    plane.fleet.machines[down].state = "running"
    plane.balancer.seen[("demo-blue", down)] = seen("demo-blue", down, "DOWN 1/2", "L7OK")
    plane.step()
    report = json.loads((plane.state.local / "health.json").read_text())["target_groups"]
    assert report["demo-blue"][down]["State"] == "initial", "one check passed: on its way up"
    plane.balancer.seen[("demo-blue", down)] = seen("demo-blue", down, "DOWN", "L7STS")
    plane.step()
    report = json.loads((plane.state.local / "health.json").read_text())["target_groups"]
    assert report["demo-blue"][down]["State"] == "unhealthy"
    assert report["demo-blue"][down]["Reason"] == "Target.ResponseCodeMismatch"
    assert report["demo-green"] == {}


def test_a_machine_that_could_not_start_is_unhealthy_with_its_reason(plane) -> None:
    plane.step()
    failed = sorted(blue_instances(plane.cloud))[0]
    plane.fleet.machines[failed].state = "failed"
    plane.fleet.machines[failed].error = "ami-1 has no disk in the local image store"
    plane.step()

    report = json.loads((plane.state.local / "health.json").read_text())["target_groups"]
    assert report["demo-blue"][failed]["State"] == "unhealthy"
    assert "no disk" in report["demo-blue"][failed]["Description"]


def test_a_leaving_instance_is_drained_before_its_machine_stops(plane) -> None:
    plane.step()
    ids = sorted(blue_instances(plane.cloud))
    autoscaling.set_capacity(plane.cloud, "demo-blue", (0, 0, 2))
    plane.balancer.drains = {("demo-blue", ids[0]), ("demo-blue", ids[1])}

    plane.step()

    blue = next(b for b in plane.balancer.applied[-1].backends if b.name == "demo-blue")
    assert blue.servers == (), "both servers leave HAProxy"
    assert plane.fleet.stopped == [], "nothing stops while HAProxy drains it"
    plane.balancer.drains = {("demo-blue", ids[1])}
    plane.step()
    assert plane.fleet.stopped == [ids[0]]
    plane.balancer.drains = set()
    plane.step()
    assert plane.fleet.stopped == ids


def test_weights_follow_the_listener(plane, seeded) -> None:
    plane.step()
    load_balancer = elbv2.find_load_balancer(seeded, "demo")
    listener = elbv2.find_listener(seeded, load_balancer["LoadBalancerArn"], 80)
    blue = elbv2.find_target_group(seeded, "demo-blue")
    green = elbv2.mirror_target_group(seeded, "demo-green", blue)
    switch = elbv2.TrafficSwitch(listener["ListenerArn"], None, load_balancer["LoadBalancerArn"])
    elbv2.set_forward_weights(
        seeded, switch, {blue["TargetGroupArn"]: 30, green["TargetGroupArn"]: 70}
    )

    plane.step()

    (frontend,) = plane.balancer.applied[-1].frontends
    assert frontend.weights == {"demo-blue": 30, "demo-green": 70}


def test_frontend_ports_are_kept_across_restarts(tmp_path) -> None:
    state = StateDir(tmp_path / "state").ensure()
    first = supervisor.frontend_ports(state, ["demo", "shop"], set())
    assert supervisor.frontend_ports(state, ["demo", "shop"], set()) == first
    assert len(set(first.values())) == 2


def test_machines_of_a_service_taken_out_of_the_config_are_listed_and_stopped(plane) -> None:
    # A supervisor started with a config that no longer names `shop` adopts its live machines.
    plane.fleet.machines["i-0shop"] = Machine("i-0shop", "shop", "green", "ami-1", "/m", pid=9)

    plane.start()
    plane.step()

    status = json.loads((plane.state.local / supervisor.STATUS_NAME).read_text())
    (shop,) = [m for m in status["machines"] if m["service"] == "shop"]
    assert (shop["target_group"], shop["health"]) == (None, None)
    assert plane.fleet.stopped == ["i-0shop"], "its instance is in no configured group"


def test_frontend_ports_reuse_a_port_whose_connections_wait_in_time_wait(tmp_path) -> None:
    import socket
    import threading

    state = StateDir(tmp_path / "state").ensure()
    (port,) = supervisor.frontend_ports(state, ["demo"], set()).values()
    # A listener on the port served a connection and went away: the server side closed first,
    # so the port holds a TIME_WAIT socket, as after a load test through a stopped HAProxy.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
    thread.start()
    client = socket.create_connection(("127.0.0.1", port))
    thread.join()
    accepted[0].close()
    listener.close()
    client.recv(1)
    client.close()
    plain = socket.socket()
    with pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the probe saw before it set SO_REUSEADDR
    plain.close()

    assert supervisor.frontend_ports(state, ["demo"], set()) == {"demo": port}


def test_reconfigure_adds_a_service_and_keeps_the_others_ports(plane, make_config) -> None:
    plane.ports = supervisor.frontend_ports(plane.state, ["demo"], set())
    plane.start()
    plane.step()
    demo_port = plane.ports["demo"]
    both = make_config(
        services={
            "demo": {"image": "base", "capacity": 2},
            "shop": {"image": "base", "capacity": 1},
        }
    )

    plane.reconfigure(both, "digest-2")
    plane.step()

    assert plane.ports["demo"] == demo_port, "demo's URL does not change"
    assert plane.ports["shop"] not in (demo_port, None)
    frontends = {f.name: f.port for f in plane.balancer.applied[-1].frontends}
    assert frontends == plane.ports
    backends = {backend.name for backend in plane.balancer.applied[-1].backends}
    assert {"shop-blue", "shop-green", "demo-blue", "demo-green"} <= backends
    status = json.loads((plane.state.local / supervisor.STATUS_NAME).read_text())
    assert status["digest"] == "digest-2" and set(status["services"]) == {"demo", "shop"}
    assert status["services"]["demo"]["url"] == f"http://127.0.0.1:{demo_port}/"

    plane.reconfigure(make_config(), "digest-3")
    plane.step()
    assert [f.name for f in plane.balancer.applied[-1].frontends] == ["demo"]
    assert plane.ports == {"demo": demo_port}


def test_follow_record_reads_the_config_the_record_names(plane, make_config) -> None:
    both = make_config(
        services={
            "demo": {"image": "base", "capacity": 1},
            "shop": {"image": "base", "capacity": 1},
        }
    )
    both.path.write_text(
        '[images.base]\nbase = "debian:bookworm"\nsteps = ["patch"]\n'
        'verify = ["serverspec_tests/base"]\n\n[services.demo]\nimage = "base"\ncapacity = 1\n\n'
        '[services.shop]\nimage = "base"\ncapacity = 1\n'
    )
    record = plane.state.local / supervisor.RECORD_NAME
    record.write_text(json.dumps({"config": str(both.path), "digest": "d2"}))
    logged: list[str] = []
    plane.log = logged.append

    supervisor.follow_record(plane)
    assert (set(plane.config.services), plane.digest) == ({"demo", "shop"}, "d2")

    record.write_text(json.dumps({"config": str(both.path.with_name("gone.toml"))}))
    supervisor.follow_record(plane)
    assert set(plane.config.services) == {"demo", "shop"}, "an unreadable config changes nothing"
    assert "cannot follow the config" in logged[-1]
