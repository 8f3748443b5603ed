"""The local load balancer against a real HAProxy 2.6, its servers small HTTP apps in threads.

They prove what the supervisor relies on: traffic follows the listener weights, and changing them
under load fails no request; a new server gets no request before its checks make it UP, and reads
as "initial" until then; a server whose health check answers 500 reads as unhealthy with AWS's
reason; a killed server and a reload (a changed health check, a new service) fail no request and
keep the servers' states; a removed server drains (its in-flight request finishes) and is then
deleted; stop() leaves no HAProxy process and the port free; a start() stops the HAProxy a killed
supervisor left behind. Checks run every second (rise 2, fall 2) so each test takes seconds.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bake.errors import BakeError
from bake.local.haproxy import HAProxy
from bake.local.haproxy_config import Backend, Desired, Frontend, HealthCheck, Server
from bake.localhost import free_port, pid_alive
from bake.polling import wait_until
from bake.runner import Runner

CHECK = HealthCheck(path="/health", interval=1, timeout=1, healthy=2, unhealthy=2)
BLUE, GREEN = "demo-blue", "demo-green"


class QuietServer(ThreadingHTTPServer):
    """Says nothing of connections its peer resets (HAProxy ends its checks with a reset)."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class App:
    """A machine's web server: answers its name as JSON, /health with `health_code`, /slow late.

    HTTP/1.1 keep-alive, as a real web server does; kill() closes every connection too."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.health_code = 200
        self.requests: list[float] = []  # when each request other than /health arrived
        self._connections: set[socket.socket] = set()
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                app._connections.add(self.connection)

            def finish(self) -> None:
                app._connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                code = 200
                if self.path == "/health":
                    code = app.health_code
                else:
                    app.requests.append(time.monotonic())
                if self.path.startswith("/slow"):
                    time.sleep(1.5)
                body = json.dumps({"name": app.name, "path": self.path}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def kill(self) -> None:
        """Stop answering at once, as a machine that is switched off does."""
        self.server.shutdown()
        self.server.server_close()
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
                connection.close()

    def served_since(self, moment: float) -> int:
        return sum(1 for arrived in list(self.requests) if arrived >= moment)


def get(url: str, timeout: float = 5.0) -> str:
    """The name of the app that answered, or "failed: why"."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return json.loads(answer.read())["name"]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"failed: {exc}"


class Load:
    """A bounded load: `rate` requests a second from a thread pool until stopped."""

    def __init__(self, url: str, rate: float = 40.0) -> None:
        self.url = url
        self.rate = rate
        self.answers: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = []
            started = time.monotonic()
            sent = 0
            while not self._stop.is_set():
                futures.append(pool.submit(self._one))
                sent += 1
                self._stop.wait(max(0.0, started + sent / self.rate - time.monotonic()))
            concurrent.futures.wait(futures)

    def _one(self) -> None:
        self.answers.append((time.monotonic(), get(self.url)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    @property
    def failures(self) -> list[str]:
        return [answer for _, answer in self.answers if answer.startswith("failed")]

    def counts(self, since: float = 0.0, until: float = float("inf")) -> collections.Counter[str]:
        return collections.Counter(a for t, a in self.answers if since <= t < until)


@pytest.fixture
def apps() -> Iterator[Callable[[str], App]]:
    started: list[App] = []

    def start(name: str) -> App:
        started.append(App(name))
        return started[-1]

    yield start
    for app in started:
        app.kill()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[HAProxy]:
    haproxy = HAProxy(Runner(), tmp_path / "haproxy", drain_timeout=10.0)
    yield haproxy
    haproxy.stop()


def desired(
    port: int,
    blue: list[App],
    green: list[App] = (),  # type: ignore[assignment]
    weights: dict[str, int] | None = None,
    health: HealthCheck = CHECK,
) -> Desired:
    """The demo service with its two target groups, their servers these apps."""
    return Desired(
        (Frontend("demo", port, {BLUE: 100} if weights is None else weights, (BLUE, GREEN)),),
        (
            Backend(BLUE, health, tuple(Server(app.name, app.port) for app in blue)),
            Backend(GREEN, health, tuple(Server(app.name, app.port) for app in green)),
        ),
    )


def worker_pid(balancer: HAProxy) -> int:
    """The pid of the worker answering the admin socket (a reload starts a new one)."""
    info = balancer.client.send("show info")
    return int(next(line for line in info.splitlines() if line.startswith("Pid:")).split()[1])


def wait_up(balancer: HAProxy, *servers: tuple[str, str], timeout: float = 6.0) -> None:
    def all_up() -> bool:
        health = balancer.health()
        return all(key in health and health[key].up for key in servers)

    assert wait_until(all_up, timeout, interval=0.1), balancer.health()


def test_traffic_follows_the_weights_and_changing_them_fails_no_request(
    balancer, apps, port
) -> None:
    blue, green = apps("i-blue"), apps("i-green")
    url = f"http://127.0.0.1:{port}/"
    balancer.start(desired(port, [blue], [green], {BLUE: 100}))
    wait_up(balancer, (BLUE, "i-blue"), (GREEN, "i-green"))

    with Load(url) as load:
        time.sleep(1.0)
        half = time.monotonic()
        balancer.apply(desired(port, [blue], [green], {BLUE: 50, GREEN: 50}))
        time.sleep(1.5)
        switched = time.monotonic()
        balancer.apply(desired(port, [blue], [green], {BLUE: 0, GREEN: 100}))
        time.sleep(1.0)

    assert load.failures == []
    assert set(load.counts(until=half)) == {"i-blue"}
    halves = load.counts(half + 0.1, switched)
    assert halves["i-blue"] >= 15 and halves["i-green"] >= 15, halves
    assert set(load.counts(since=switched + 0.1)) == {"i-green"}


def test_a_new_server_starts_down_and_gets_no_request_before_it_is_up(balancer, apps, port) -> None:
    old, new = apps("i-old"), apps("i-new")
    balancer.start(desired(port, [old]))
    wait_up(balancer, (BLUE, "i-old"))

    with Load(f"http://127.0.0.1:{port}/") as load:
        balancer.apply(desired(port, [old, new]))
        first = balancer.health()[(BLUE, "i-new")]
        assert first.status.startswith("DOWN")
        assert first.target_health(ever_up=False)["State"] == "initial"
        deadline = time.monotonic() + 6
        while True:
            asked = time.monotonic()
            if balancer.health()[(BLUE, "i-new")].up:
                break
            last_down = asked  # it was still DOWN after this moment
            assert asked < deadline, "the new server never came up"
            time.sleep(0.05)
        time.sleep(1.0)

    assert load.failures == []
    assert new.requests, "the new server got no traffic once up"
    assert min(new.requests) > last_down
    assert balancer.health()[(BLUE, "i-new")].target_health(ever_up=True) == {"State": "healthy"}


def test_a_health_check_answering_500_makes_a_server_unhealthy(balancer, apps, port) -> None:
    sick, never = apps("i-sick"), apps("i-never")
    never.health_code = 500
    balancer.start(desired(port, [sick, never]))
    wait_up(balancer, (BLUE, "i-sick"))

    sick.health_code = 500
    assert wait_until(lambda: not balancer.health()[(BLUE, "i-sick")].up, 5, interval=0.1)

    health = balancer.health()
    unhealthy = health[(BLUE, "i-sick")].target_health(ever_up=True)
    assert unhealthy["State"] == "unhealthy"
    assert unhealthy["Reason"] == "Target.ResponseCodeMismatch"
    assert "L7STS 500" in unhealthy["Description"]
    assert health[(BLUE, "i-never")].target_health(ever_up=False)["State"] == "initial"


def test_killing_one_of_two_servers_under_load_fails_no_request(balancer, apps, port) -> None:
    one, two = apps("i-one"), apps("i-two")
    balancer.start(desired(port, [one, two]))
    wait_up(balancer, (BLUE, "i-one"), (BLUE, "i-two"))

    with Load(f"http://127.0.0.1:{port}/") as load:
        time.sleep(1.0)
        two.kill()
        killed = time.monotonic()
        assert wait_until(lambda: not balancer.health()[(BLUE, "i-two")].up, 4, interval=0.1)
        time.sleep(0.5)

    assert load.failures == []
    assert set(load.counts(since=killed + 0.2)) == {"i-one"}
    gone = balancer.health()[(BLUE, "i-two")].target_health(ever_up=True)
    assert (gone["State"], gone["Reason"]) == ("unhealthy", "Target.FailedHealthChecks")


def test_a_reload_for_a_changed_health_check_keeps_servers_up_and_fails_no_request(
    balancer, apps, port, tmp_path
) -> None:
    one, two, sick, other = apps("i-one"), apps("i-two"), apps("i-sick"), apps("i-other")
    sick.health_code = 500  # a reloaded server absent from the state file would start UP
    balancer.start(desired(port, [one, two, sick]))
    wait_up(balancer, (BLUE, "i-one"), (BLUE, "i-two"))
    master = balancer.pid
    worker = worker_pid(balancer)
    slower = HealthCheck(path="/health", interval=2, timeout=1, healthy=3, unhealthy=3)
    other_port = free_port()

    with Load(f"http://127.0.0.1:{port}/") as load:
        time.sleep(0.7)
        changed = desired(port, [one, two, sick], health=slower)
        balancer.apply(changed)
        health = balancer.health()
        left = wait_until(lambda: len(_children(master)) == 1, 2, 0.1)  # the old worker
        grown = Desired(
            (*changed.frontends, Frontend("other", other_port, {"other-blue": 1})),
            (*changed.backends, Backend("other-blue", CHECK, (Server("i-other", other.port),))),
        )
        balancer.apply(grown)
        time.sleep(0.7)

    assert load.failures == []
    assert balancer.pid == master
    assert worker_pid(balancer) != worker
    assert left, "the old worker outlived the reload by 2 s"
    assert health[(BLUE, "i-one")].up and health[(BLUE, "i-two")].up, health
    assert health[(BLUE, "i-sick")].status.startswith("DOWN") and not sick.requests
    config = (tmp_path / "haproxy" / "haproxy.cfg").read_text()
    assert "check inter 2s fall 3 rise 3" in config and "frontend svc-other" in config
    wait_up(balancer, ("other-blue", "i-other"))
    assert get(f"http://127.0.0.1:{other_port}/") == "i-other"


def test_a_removed_server_drains_its_requests_then_is_deleted(balancer, apps, port) -> None:
    leaving, staying = apps("i-leaving"), apps("i-staying")
    balancer.start(desired(port, [leaving]))
    wait_up(balancer, (BLUE, "i-leaving"))
    slow: concurrent.futures.Future[str]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(get, f"http://127.0.0.1:{port}/slow")
        assert wait_until(lambda: leaving.requests, 2, interval=0.02)

        balancer.apply(desired(port, [staying]))
        removed = time.monotonic()
        assert balancer.draining() == {(BLUE, "i-leaving")}
        drained = balancer.health()[(BLUE, "i-leaving")]
        assert drained.status == "DRAIN"
        assert drained.target_health(ever_up=True)["State"] == "draining"
        balancer.apply(desired(port, [staying]))
        assert balancer.draining() == {(BLUE, "i-leaving")}, "deleted with a request in flight"

        assert slow.result(timeout=5) == "i-leaving"
    assert wait_until(
        lambda: (balancer.apply(desired(port, [staying])), not balancer.draining())[1], 3, 0.1
    )
    assert (BLUE, "i-leaving") not in balancer.health()
    assert leaving.served_since(removed) == 0
    wait_up(balancer, (BLUE, "i-staying"))
    assert get(f"http://127.0.0.1:{port}/") == "i-staying"


def test_stop_leaves_no_haproxy_and_frees_the_port(balancer, apps, port) -> None:
    balancer.start(desired(port, [apps("i-one")]))
    master = balancer.pid
    assert master is not None and pid_alive(master)

    balancer.stop()

    assert balancer.pid is None
    assert not pid_alive(master)
    assert not any(_runs_haproxy_of(pid, balancer.config) for pid in _pids())
    with socket.socket() as probe:
        # SO_REUSEADDR: a connection closed a moment ago may still wait in TIME_WAIT on this
        # port; the bind fails all the same while anything still listens on it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()


def test_a_start_stops_the_haproxy_a_killed_supervisor_left(tmp_path, apps, port) -> None:
    app = apps("i-one")
    left = HAProxy(Runner(), tmp_path / "haproxy")
    left.start(desired(port, [app]))
    orphan = left.pid
    assert orphan is not None

    again = HAProxy(Runner(), tmp_path / "haproxy")
    try:
        again.start(desired(port, [app]))
        assert not pid_alive(orphan)
        assert again.pid not in (None, orphan)
        wait_up(again, (BLUE, "i-one"))
        assert get(f"http://127.0.0.1:{port}/") == "i-one"
    finally:
        again.stop()
        left.stop()


def test_a_port_in_use_is_refused_and_the_running_haproxy_is_left_alone(
    balancer, apps, port
) -> None:
    app = apps("i-one")
    balancer.start(desired(port, [app]))
    wait_up(balancer, (BLUE, "i-one"))
    worker = worker_pid(balancer)
    grown = Desired(
        (*desired(port, [app]).frontends, Frontend("other", app.port, {BLUE: 1})),
        desired(port, [app]).backends,
    )

    with pytest.raises(BakeError, match=f"127.0.0.1:{app.port}"):
        balancer.apply(grown)

    assert worker_pid(balancer) == worker
    assert get(f"http://127.0.0.1:{port}/") == "i-one"


def _children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (HAProxy's workers, old and new)."""
    children = []
    for child in _pids():
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                children.append(child)
    return children


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _runs_haproxy_of(pid: int, config: Path) -> bool:
    try:
        return str(config).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
