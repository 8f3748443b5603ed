"""The local load balancer without an HAProxy process: the config it renders, how it reads
`show stat`, how HAProxy's view maps to AWS target health, the health checks it takes from target
groups, the runtime commands apply() sends (to a fake admin socket) and where the socket lives."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bake.errors import BakeError
from bake.local import haproxy, haproxy_config
from bake.local.haproxy import HAProxy, ServerHealth, UnixSocketClient, parse_stat
from bake.local.haproxy_config import (
    Backend,
    Desired,
    Frontend,
    HealthCheck,
    Server,
    render,
    socket_directory,
    status_expect,
)
from bake.localhost import free_port, pid_alive
from bake.polling import wait_until
from tests.unit.fakes import FakeRunner

REAL_STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wret"
    "r,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,thr"
    "ottle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration"
    ",hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_ma"
    "x,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_"
    "agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_de"
    "sc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,m"
    "ode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cac"
    "he_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,i"
    "dle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_s"
    "erver_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2"
    "_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detec"
    "ted_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway"
    "_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_tota"
    "l_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1"
    "_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,\n"
    "demo,FRONTEND,,,0,0,9983,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,0,0,0,0,0,0,"
    ",0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,0,0,0,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0,0"
    ",0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,\n"
    "svc-demo,demo-blue,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,100,1,0,,,34,,,1,3,1,,0,,2,0,,0"
    ",,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,unix,,http,,,,,,,,0,0,0,,,0,,0,0,"
    "0,0,0,0,0,0,0,100,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "svc-demo,BACKEND,0,0,0,0,999,0,0,0,0,0,,0,0,0,0,UP,100,1,0,,0,16,0,,1,3,0,,0,,1,0,,0,,"
    ",,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,0,0,0"
    ",0,,,0,0,0,0,0,,,,,100,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,\n"
    "tg-demo-blue,FRONTEND,,,0,0,9983,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,4,0,,,,0,0,0,0,,,,0,0,"
    "0,0,0,0,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,0,0,0,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,"
    ",-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,\n"
    "tg-demo-blue,i-a,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,31,0,,1,5,1,,0,,2,0,,0,L7OK,2"
    "00,1,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,Layer7 check passed,,2,2,3,,,,127.0.0.1:"
    "28081,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "tg-demo-blue,i-b,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,0,1,19,19,,1,5,2,,0,,2,0,,0,L7S"
    "TS,500,1,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Internal Server Error,,0,0,0,0,,,,Layer7 wrong st"
    "atus,,2,2,0,,,,127.0.0.1:28082,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,"
    ",,,,,,,,,,,,,,,,,,,,,\n"
)
HEADER = REAL_STAT.splitlines()[0]
CHECK = HealthCheck(path="/health", interval=1, timeout=1)


def stat_row(proxy: str, server: str, **fields: object) -> dict[str, object]:
    return {"pxname": proxy, "svname": server, **fields}


def stat_csv(rows: list[dict[str, object]]) -> str:
    """`show stat` as HAProxy 2.6 writes it, with these rows' fields and the rest empty."""
    names = HEADER[2:].split(",")
    lines = [",".join(str(row.get(name, "")) for name in names) for row in rows]
    return "\n".join([HEADER, *lines]) + "\n\n"


class FakeSocket:
    """HAProxy's admin socket: answers `show` commands from `rows`, records every line."""

    def __init__(self) -> None:
        self.worker = 100
        self.rows: list[dict[str, object]] = []
        self.sent: list[str] = []
        self.replies: dict[str, str] = {}

    def send(self, line: str) -> str:
        self.sent.append(line)
        if line == "show info":
            return f"Name: HAProxy\nVersion: 2.6.12\nPid: {self.worker}\n"
        if line.startswith("show stat"):
            return stat_csv(self.rows)
        if line == "show servers state":
            return "1\n# be_id be_name srv_id srv_name\n5 tg-demo-blue 1 i-1\n"
        for prefix, reply in self.replies.items():
            if line.startswith(prefix):
                return reply
        if line.startswith("add server"):
            return "New server registered.\n\n\n\n"
        if "del server" in line:
            return "\n\nServer deleted.\n"
        return "\n"

    @property
    def commands(self) -> list[str]:
        return [line for line in self.sent if not line.startswith("show ")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def demo(
    port: int,
    blue: tuple[Server, ...] = (),
    green: tuple[Server, ...] = (),
    weights: dict[str, int] | None = None,
) -> Desired:
    """The demo service, all traffic to blue unless `weights` say otherwise."""
    return Desired(
        (Frontend("demo", port, weights or {"demo-blue": 100}, ("demo-blue", "demo-green")),),
        (Backend("demo-blue", CHECK, blue), Backend("demo-green", CHECK, green)),
    )


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def admin() -> FakeSocket:
    admin = FakeSocket()
    admin.rows = [
        stat_row("svc-demo", "demo-blue", status="no check", uweight=100),
        stat_row("svc-demo", "demo-green", status="no check", uweight=0),
    ]
    return admin


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def signals() -> list[tuple[int, int]]:
    return []


@pytest.fixture
def balancer(tmp_path, admin, clock, signals, port) -> HAProxy:
    def send_signal(pid: int, sig: int) -> None:
        signals.append((pid, sig))
        admin.worker += 1  # the master started a new worker

    balancer = HAProxy(
        FakeRunner(),
        tmp_path / "haproxy",
        client=admin,
        clock=clock,
        send_signal=send_signal,
        drain_timeout=30.0,
    )
    balancer.start(demo(port))
    admin.sent.clear()
    return balancer


# --- the config ---------------------------------------------------------------------------------


def two_services(tmp_path: Path) -> Desired:
    return Desired(
        (
            Frontend("shop", 8001, {"shop-blue": 100}, ("shop-blue", "shop-green")),
            Frontend("api", 8002, {"api-blue": 30, "api-green": 70}, ("api-blue", "api-green")),
        ),
        (
            Backend("shop-blue", CHECK, (Server("i-0abc", 40001),)),
            Backend("shop-green", HealthCheck()),
            Backend("api-blue", HealthCheck(matcher="200,302")),
            Backend("api-green", HealthCheck(matcher="200-299", enabled=True)),
        ),
    )


def section(config: str, title: str) -> list[str]:
    """The lines of one section of a config, without its title."""
    lines = config.splitlines()
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return [line.strip() for line in lines[start:end] if line.strip()]


def test_each_service_gets_a_frontend_and_a_backend_of_its_target_groups(tmp_path) -> None:
    config = render(two_services(tmp_path), tmp_path)
    tag = haproxy_config._tag(tmp_path)

    assert section(config, "frontend svc-shop") == [
        "bind 127.0.0.1:8001",
        "default_backend svc-shop",
    ]
    assert section(config, "backend svc-api") == [
        "balance roundrobin",
        f"server api-blue abns@bake-{tag}-tg-api-blue weight 30",
        f"server api-green abns@bake-{tag}-tg-api-green weight 70",
    ]
    assert f"server shop-green abns@bake-{tag}-tg-shop-green weight 0" in config
    assert section(config, "frontend tg-shop-blue") == [
        f"bind abns@bake-{tag}-tg-shop-blue",
        "default_backend tg-shop-blue",
    ]
    assert section(config, "backend tg-shop-blue") == [
        "balance roundrobin",
        "option httpchk GET /health",
        "http-check expect status 200",
        "timeout check 1s",
        "server i-0abc 127.0.0.1:40001 check inter 1s fall 2 rise 2 weight 1",
    ]


def test_the_config_holds_the_runtime_settings_the_design_relies_on(tmp_path) -> None:
    config = render(two_services(tmp_path), tmp_path)

    for line in (
        f"stats socket '{tmp_path}/admin.sock' mode 600 level admin expose-fd listeners",
        f"server-state-file '{tmp_path}/servers.state'",
        f"pidfile '{tmp_path}/haproxy.pid'",
        "load-server-state-from-file global",
        "option redispatch 1",
        "retries 3",
        "retry-on conn-failure empty-response response-timeout 502 503 504",
        "timeout connect 2s",
        "log stdout format raw local0",
        "option httplog",
        "nbthread 1",
    ):
        assert f"    {line}\n" in config, line


def test_a_target_group_not_in_the_cloud_yet_gets_default_checks_and_no_servers(tmp_path) -> None:
    desired = Desired((), (Backend("shop-green", HealthCheck()),))

    assert section(render(desired, tmp_path), "backend tg-shop-green") == [
        "balance roundrobin",
        "option httpchk GET /",
        "http-check expect status 200",
        "timeout check 5s",
    ]
    assert HealthCheck().server_options() == "check inter 5s fall 2 rise 2 weight 1"


def test_a_disabled_health_check_sends_no_checks(tmp_path) -> None:
    unchecked = HealthCheck(enabled=False)
    desired = Desired((), (Backend("x", unchecked, (Server("i-1", 4000),)),))

    assert section(render(desired, tmp_path), "backend tg-x") == [
        "balance roundrobin",
        "server i-1 127.0.0.1:4000 weight 1",
    ]


def test_two_state_directories_get_different_abstract_sockets(tmp_path) -> None:
    desired = Desired((), (Backend("x", CHECK),))
    one, two = render(desired, tmp_path / "one"), render(desired, tmp_path / "two")

    abns = re.compile(r"abns@\S+")
    assert set(abns.findall(one)).isdisjoint(abns.findall(two))


@pytest.mark.parametrize(
    ("matcher", "line"),
    [
        ("200", "http-check expect status 200"),
        ("200,302", "http-check expect rstatus ^(200|302)$"),
        ("200-299", "http-check expect rstatus ^(2[0-9][0-9])$"),
        ("200-204", "http-check expect rstatus ^(20[0-4])$"),
    ],
)
def test_a_matcher_becomes_an_http_check_expectation(matcher, line) -> None:
    assert status_expect(matcher) == line


@pytest.mark.parametrize(
    "matcher", ["200", "200,302", "200-299", "200-249,302", "201,203,205", "100-599", "250-310"]
)
def test_a_matcher_regex_accepts_exactly_its_codes(matcher) -> None:
    wanted = set()
    for part in matcher.split(","):
        low, _, high = part.partition("-")
        wanted |= set(range(int(low), int(high or low) + 1))
    expect = status_expect(matcher)
    pattern = expect.split()[-1]

    if expect.startswith("http-check expect status"):
        accepted = {int(pattern)}
    else:
        accepted = {code for code in range(100, 600) if re.match(pattern, str(code))}
    assert accepted == wanted


@pytest.mark.parametrize("matcher", ["", "abc", "600", "299-200", "20", "200;302"])
def test_a_matcher_that_is_no_http_codes_is_refused(matcher) -> None:
    with pytest.raises(BakeError, match="matcher"):
        HealthCheck(matcher=matcher)


@pytest.mark.parametrize(
    ("weights", "scaled"),
    [
        ({"a": 100, "b": 0}, {"a": 100, "b": 0}),
        ({"a": 256, "b": 7}, {"a": 256, "b": 7}),
        ({"a": 999, "b": 1}, {"a": 256, "b": 1}),
        ({"a": 500, "b": 500}, {"a": 256, "b": 256}),
        ({"a": 0, "b": 999}, {"a": 0, "b": 256}),
        ({"a": 900, "b": 300}, {"a": 256, "b": 85}),
        ({"a": 100}, {"a": 100, "b": 0}),
    ],
)
def test_alb_weights_scale_into_haproxys_range(weights, scaled) -> None:
    assert Frontend("s", 8000, weights, ("a", "b")).haproxy_weights() == scaled


def test_a_frontend_without_target_groups_forwards_to_its_weights_names() -> None:
    assert Frontend("s", 8000, {"b": 1, "a": 2}).members == ("a", "b")


def test_a_service_forwarding_to_a_target_group_without_backend_is_refused() -> None:
    with pytest.raises(BakeError, match="shop-green"):
        Desired((Frontend("shop", 8000, {"shop-green": 1}),), ())


@pytest.mark.parametrize(
    ("frontend", "backend"),
    [
        (Frontend("bad name", 8000, {"x": 1}), Backend("x", CHECK)),
        (Frontend("s", 8000, {"x y": 1}), Backend("x y", CHECK)),
        (Frontend("s", 70000, {"x": 1}), Backend("x", CHECK)),
        (Frontend("s", 8000, {"x": 1}), Backend("x", CHECK, (Server("i-1;x", 1),))),
    ],
)
def test_names_and_ports_haproxy_cannot_take_are_refused(frontend, backend) -> None:
    with pytest.raises(BakeError):
        Desired((frontend,), (backend,))


# --- health checks from target groups -----------------------------------------------------------


def test_a_health_check_comes_from_a_target_groups_settings() -> None:
    group = {
        "TargetGroupName": "demo-blue",
        "HealthCheckProtocol": "HTTP",
        "HealthCheckPort": "traffic-port",
        "HealthCheckEnabled": True,
        "HealthCheckPath": "/health",
        "HealthCheckIntervalSeconds": 10,
        "HealthCheckTimeoutSeconds": 3,
        "HealthyThresholdCount": 4,
        "UnhealthyThresholdCount": 3,
        "Matcher": {"HttpCode": "200-299"},
    }

    assert HealthCheck.from_target_group(group) == HealthCheck("/health", "200-299", 10, 3, 4, 3)
    assert HealthCheck.from_target_group({**group, "HealthCheckEnabled": False}).enabled is False


def test_a_target_group_without_health_settings_keeps_the_defaults() -> None:
    assert HealthCheck.from_target_group({"TargetGroupName": "x"}) == HealthCheck()


@pytest.mark.parametrize("path", ["health", "/a b", "/a#b", "/'", '/"', "/a\\b"])
def test_a_health_check_path_the_config_cannot_carry_is_refused(path) -> None:
    with pytest.raises(BakeError, match="path"):
        HealthCheck(path=path)


def test_a_health_check_count_below_one_is_refused() -> None:
    with pytest.raises(BakeError, match="healthy"):
        HealthCheck(healthy=0)


# --- show stat ----------------------------------------------------------------------------------


def test_show_stat_gives_each_servers_row() -> None:
    rows = parse_stat(REAL_STAT)

    assert [(row.proxy, row.server) for row in rows] == [
        ("svc-demo", "demo-blue"),
        ("tg-demo-blue", "i-a"),
        ("tg-demo-blue", "i-b"),
    ]
    blue, up, down = rows
    assert (blue.status, blue.weight, blue.address) == ("no check", 100, "unix")
    assert (up.status, up.check_status, up.check_code) == ("UP", "L7OK", "200")
    assert up.check_description == "Layer7 check passed"
    assert (up.address, up.sessions, up.weight) == ("127.0.0.1:28081", 0, 1)
    assert (down.status, down.check_status, down.check_code) == ("DOWN", "L7STS", "500")
    assert down.check_description == "Internal Server Error"


def test_a_check_in_progress_reads_as_its_last_result() -> None:
    text = stat_csv([stat_row("tg-x", "i-1", status="DOWN 1/2", check_status="* L4CON", scur=3)])

    [row] = parse_stat(text)

    assert (row.status, row.check_status, row.sessions) == ("DOWN 1/2", "L4CON", 3)


def test_an_answer_that_is_no_stat_csv_is_an_error() -> None:
    with pytest.raises(BakeError, match="show stat"):
        parse_stat("Unknown command.\n")


# --- target health ------------------------------------------------------------------------------


def seen(status: str, check_status: str = "L7OK", code: str = "200") -> ServerHealth:
    return ServerHealth("demo-blue", "i-1", status, check_status, code, "Layer7 check", 0)


@pytest.mark.parametrize(
    ("status", "check", "ever_up", "state", "reason"),
    [
        ("UP", "L7OK", False, "healthy", None),
        ("UP 1/2", "L7STS", True, "healthy", None),
        ("DOWN", "INI", False, "initial", "Elb.InitialHealthChecking"),
        ("DOWN 1/2", "L7OK", False, "initial", "Elb.InitialHealthChecking"),
        ("DOWN", "L4CON", False, "initial", "Elb.InitialHealthChecking"),
        ("DOWN", "L7STS", True, "unhealthy", "Target.ResponseCodeMismatch"),
        ("DOWN", "L4TOUT", True, "unhealthy", "Target.Timeout"),
        ("DOWN", "L7TOUT", True, "unhealthy", "Target.Timeout"),
        ("DOWN", "L4CON", True, "unhealthy", "Target.FailedHealthChecks"),
        ("DOWN 1/2", "L7OK", True, "unhealthy", "Target.FailedHealthChecks"),
        ("DRAIN", "L7OK", True, "draining", "Target.DeregistrationInProgress"),
        ("MAINT", "L7OK", True, "draining", "Target.DeregistrationInProgress"),
        ("NOLB", "L7OK", True, "draining", "Target.DeregistrationInProgress"),
        ("no check", "", False, "unavailable", "Target.HealthCheckDisabled"),
    ],
)
def test_haproxys_view_becomes_aws_target_health(status, check, ever_up, state, reason) -> None:
    answer = seen(status, check).target_health(ever_up=ever_up)

    assert answer["State"] == state
    assert answer.get("Reason") == reason
    if reason:
        assert status in answer["Description"] and check in answer["Description"]


def test_an_unhealthy_target_says_the_code_its_check_got() -> None:
    answer = seen("DOWN", "L7STS", "500").target_health(ever_up=True)

    assert answer["Description"] == "HAProxy: DOWN, last check L7STS 500 (Layer7 check)"


@pytest.mark.parametrize(
    ("status", "up"),
    [("UP", True), ("UP 1/2", True), ("no check", True), ("DOWN", False), ("DOWN 1/2", False)]
    + [("DRAIN", False), ("MAINT", False)],
)
def test_up_means_haproxy_sends_it_traffic(status, up) -> None:
    assert seen(status).up is up


# --- runtime commands ---------------------------------------------------------------------------


def blue_row(server: str, port: int, **fields: object) -> dict[str, object]:
    return stat_row("tg-demo-blue", server, addr=f"127.0.0.1:{port}", **fields)


def test_start_validates_the_config_and_runs_haproxy_in_master_worker_mode(
    tmp_path, admin, port
) -> None:
    runner = FakeRunner()
    balancer = HAProxy(runner, tmp_path / "haproxy", client=admin)

    balancer.start(demo(port, (Server("i-1", 4001),)))

    config = tmp_path / "haproxy" / "haproxy.cfg"
    [check] = runner.commands("haproxy")[:1]
    assert check == ["haproxy", "-c", "-f", f"{config}.new"]
    assert runner.processes[0].argv == ["haproxy", "-W", "-f", str(config)]
    assert balancer.pid == 4242
    assert "server i-1" not in config.read_text(), "servers join after start, DOWN"
    assert admin.commands == [
        "add server tg-demo-blue/i-1 127.0.0.1:4001 check inter 1s fall 2 rise 2 weight 1; "
        "enable server tg-demo-blue/i-1; enable health tg-demo-blue/i-1; "
        "set server tg-demo-blue/i-1 health down"
    ]


def test_a_start_that_haproxy_does_not_answer_names_the_log(tmp_path, port) -> None:
    runner = FakeRunner().on("haproxy", exits=1)

    class Silent:
        def send(self, line: str) -> str:
            raise BakeError("refused")

    balancer = HAProxy(runner, tmp_path / "haproxy", client=Silent())
    with pytest.raises(BakeError, match="did not start") as raised:
        balancer.start(demo(port))

    assert "haproxy.log" in str(raised.value)
    assert balancer.pid is None


def test_apply_with_nothing_changed_sends_nothing(balancer, admin, port) -> None:
    balancer.apply(demo(port))

    assert admin.commands == []


def test_a_server_without_checks_is_enabled_at_once(balancer, admin, port) -> None:
    unchecked = HealthCheck(enabled=False)
    desired = Desired(
        demo(port).frontends,
        (Backend("demo-blue", unchecked, (Server("i-1", 4001),)), Backend("demo-green", CHECK)),
    )
    balancer._static = desired.static()  # as if reloaded with this health check

    balancer.apply(desired)

    assert admin.commands == [
        "add server tg-demo-blue/i-1 127.0.0.1:4001 weight 1; enable server tg-demo-blue/i-1"
    ]


def test_changed_weights_are_set_scaled(balancer, admin, port) -> None:
    balancer.apply(demo(port, weights={"demo-blue": 1, "demo-green": 999}))

    assert admin.commands == [
        "set weight svc-demo/demo-blue 1",
        "set weight svc-demo/demo-green 256",
    ]


def test_a_removed_server_drains_then_is_deleted_when_its_sessions_end(
    balancer, admin, clock, port
) -> None:
    admin.rows += [blue_row("i-1", 4001, status="UP"), blue_row("i-2", 4002, status="UP", scur=2)]
    kept = demo(port, (Server("i-1", 4001),))

    balancer.apply(kept)
    assert admin.commands == ["set server tg-demo-blue/i-2 state drain"]
    assert balancer.draining() == {("demo-blue", "i-2")}

    admin.rows[-1] = blue_row("i-2", 4002, status="DRAIN", scur=2)
    clock.now += 5
    balancer.apply(kept)
    assert admin.commands == ["set server tg-demo-blue/i-2 state drain"], "no second command"

    admin.rows[-1] = blue_row("i-2", 4002, status="DRAIN", scur=0)
    balancer.apply(kept)
    assert admin.commands[1:] == [
        "set server tg-demo-blue/i-2 state maint; shutdown sessions server tg-demo-blue/i-2; "
        "del server tg-demo-blue/i-2"
    ]
    assert balancer.draining() == set()


def test_a_drain_that_outlives_the_timeout_ends_its_sessions(balancer, admin, clock, port) -> None:
    admin.rows.append(blue_row("i-2", 4002, status="UP", scur=1))
    balancer.apply(demo(port))
    admin.rows[-1] = blue_row("i-2", 4002, status="DRAIN", scur=1)

    clock.now += 29.9
    balancer.apply(demo(port))
    assert len(admin.commands) == 1

    clock.now += 0.1
    balancer.apply(demo(port))
    assert admin.commands[-1].endswith("del server tg-demo-blue/i-2")


def test_a_draining_server_wanted_again_is_made_ready(balancer, admin, port) -> None:
    admin.rows.append(blue_row("i-2", 4002, status="UP"))
    balancer.apply(demo(port))
    admin.rows[-1] = blue_row("i-2", 4002, status="DRAIN", scur=1)

    balancer.apply(demo(port, (Server("i-2", 4002),)))

    assert admin.commands[-1] == "set server tg-demo-blue/i-2 state ready"
    assert balancer.draining() == set()


def test_a_server_whose_machine_moved_is_replaced(balancer, admin, port) -> None:
    admin.rows.append(blue_row("i-1", 4001, status="UP"))

    balancer.apply(demo(port, (Server("i-1", 4555),)))

    assert admin.commands[0].endswith("del server tg-demo-blue/i-1")
    assert admin.commands[1].startswith("add server tg-demo-blue/i-1 127.0.0.1:4555 ")


def test_a_server_left_in_maintenance_by_a_lost_connection_is_enabled(
    balancer, admin, port
) -> None:
    admin.rows.append(blue_row("i-1", 4001, status="MAINT"))

    balancer.apply(demo(port, (Server("i-1", 4001),)))

    assert admin.commands == [
        "enable server tg-demo-blue/i-1; enable health tg-demo-blue/i-1; "
        "set server tg-demo-blue/i-1 health down"
    ]


def test_a_refused_command_is_an_error_naming_it_and_the_reply(balancer, admin, port) -> None:
    admin.replies["add server"] = "Already exists a server with the same name in backend.\n"

    with pytest.raises(BakeError) as raised:
        balancer.apply(demo(port, (Server("i-1", 4001),)))

    assert "add server tg-demo-blue/i-1" in str(raised.value)
    assert "Already exists a server" in str(raised.value)


def test_a_changed_health_check_reloads_with_the_running_servers(
    balancer, admin, signals, tmp_path, port
) -> None:
    admin.rows += [blue_row("i-1", 4001, status="UP"), blue_row("i-2", 4002, status="DRAIN")]
    slower = HealthCheck(path="/ready", interval=3)
    desired = Desired(
        demo(port).frontends,
        (Backend("demo-blue", slower, (Server("i-1", 4001),)), Backend("demo-green", CHECK)),
    )

    balancer.apply(desired)

    directory = tmp_path / "haproxy"
    assert signals == [(4242, signal.SIGUSR2)]
    assert section((directory / "haproxy.cfg").read_text(), "backend tg-demo-blue") == [
        "balance roundrobin",
        "option httpchk GET /ready",
        "http-check expect status 200",
        "timeout check 5s",
        "server i-1 127.0.0.1:4001 check inter 3s fall 2 rise 2 weight 1",
        "server i-2 127.0.0.1:4002 check inter 3s fall 2 rise 2 weight 1",
    ]
    assert "5 tg-demo-blue 1 i-1" in (directory / "servers.state").read_text()
    assert admin.commands == ["set server tg-demo-blue/i-2 state drain"]


def test_a_new_service_reloads_and_weights_follow(balancer, admin, signals, port) -> None:
    other = free_port()
    grown = Desired(
        (*demo(port).frontends, Frontend("shop", other, {"shop-blue": 10})),
        (*demo(port).backends, Backend("shop-blue", CHECK)),
    )

    balancer.apply(grown)

    assert len(signals) == 1
    assert admin.worker == 101
    balancer.apply(grown)
    assert len(signals) == 1, "the same static part reloads once"


def default_checks(port: int) -> Desired:
    """The demo service with its blue target group's health check changed to the defaults."""
    return Desired(
        demo(port).frontends, (Backend("demo-blue", HealthCheck()), demo(port).backends[1])
    )


def test_a_config_haproxy_rejects_is_an_error_and_the_running_one_stays(
    tmp_path, admin, signals, port
) -> None:
    alert = "[ALERT]    (1) : config : parsing [x.cfg:9] : unknown keyword 'nope'"
    runner = FakeRunner()
    balancer = HAProxy(runner, tmp_path / "haproxy", client=admin, send_signal=lambda *_: None)
    balancer.start(demo(port))
    config = (tmp_path / "haproxy" / "haproxy.cfg").read_text()
    runner.on("haproxy", returncode=1, stderr=f"[NOTICE] version\n{alert}\n")

    with pytest.raises(BakeError, match="unknown keyword 'nope'"):
        balancer.apply(default_checks(port))

    assert (tmp_path / "haproxy" / "haproxy.cfg").read_text() == config


def test_a_reload_haproxy_fails_is_an_error_and_the_config_is_put_back(
    tmp_path, admin, port
) -> None:
    directory = tmp_path / "haproxy"

    def failing_reload(pid: int, sig: int) -> None:
        with open(directory / "haproxy.log", "a") as log:
            log.write("[WARNING]  (10) : Loading failure!\n")

    balancer = HAProxy(FakeRunner(), directory, client=admin, send_signal=failing_reload)
    balancer.start(demo(port))
    before = (directory / "haproxy.cfg").read_text()
    changed = default_checks(port)

    with pytest.raises(BakeError, match="did not load"):
        balancer.apply(changed)

    assert (directory / "haproxy.cfg").read_text() == before
    admin.sent.clear()
    with pytest.raises(BakeError):
        balancer.apply(changed)  # still the old static part: it tries again


def test_a_port_in_use_is_refused_before_any_reload(balancer, admin, signals, port) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        grown = Desired(
            (*demo(port).frontends, Frontend("shop", busy, {"demo-blue": 1})), demo(port).backends
        )

        with pytest.raises(BakeError, match=f"127.0.0.1:{busy}"):
            balancer.apply(grown)

    assert signals == []


def test_an_abstract_socket_in_use_is_refused_before_any_reload(
    balancer, signals, tmp_path, port
) -> None:
    grown = Desired(demo(port).frontends, (*demo(port).backends, Backend("shop-blue", CHECK)))
    with socket.socket(socket.AF_UNIX) as taken:
        taken.bind(haproxy._abns_address(tmp_path / "haproxy", "shop-blue"))

        with pytest.raises(BakeError, match="abns@bake-.*-tg-shop-blue"):
            balancer.apply(grown)

    assert signals == []


def test_an_haproxy_that_died_is_started_again(balancer, admin, port) -> None:
    runner = balancer.runner
    runner.processes[0].returncode = 1  # type: ignore[attr-defined]

    balancer.apply(demo(port))

    assert len(runner.processes) == 2  # type: ignore[attr-defined]
    assert balancer.pid == 4242


def test_health_reads_instance_servers_by_target_group(balancer, admin) -> None:
    admin.rows.append(blue_row("i-1", 4001, status="DOWN 1/2", check_status="L7OK", scur=1))

    assert balancer.health() == {
        ("demo-blue", "i-1"): ServerHealth("demo-blue", "i-1", "DOWN 1/2", "L7OK", "", "", 1)
    }


def test_stop_stops_the_process_and_forgets_the_drains(balancer, admin, port) -> None:
    admin.rows.append(blue_row("i-2", 4002, status="UP", scur=1))
    balancer.apply(demo(port))
    process = balancer.runner.processes[0]  # type: ignore[attr-defined]

    balancer.stop()

    assert process.stopped and balancer.pid is None and balancer.draining() == set()


# --- stale processes ----------------------------------------------------------------------------


def test_a_stale_haproxy_of_this_directory_is_stopped(tmp_path) -> None:
    directory = tmp_path / "haproxy"
    directory.mkdir()
    config = directory.absolute() / "haproxy.cfg"
    # Stands for an HAProxy a killed supervisor left: a process naming this config, in its group.
    stale = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-f", str(config)],
        start_new_session=True,
    )
    (directory / "haproxy.pid").write_text(f"{stale.pid}\n")
    cmdline = Path(f"/proc/{stale.pid}/cmdline")
    assert wait_until(lambda: str(config).encode() in cmdline.read_bytes(), 5, interval=0.01)

    HAProxy(FakeRunner(), directory).stop_stale()

    stale.wait(timeout=5)  # it ended, long before its sleep would have
    assert not pid_alive(stale.pid)
    assert not (directory / "haproxy.pid").exists()


def test_a_pid_file_naming_another_program_signals_nothing(tmp_path) -> None:
    directory = tmp_path / "haproxy"
    directory.mkdir()
    (directory / "haproxy.pid").write_text(f"{os.getpid()}\n")

    HAProxy(FakeRunner(), directory).stop_stale()  # this test's own pid: it would end the run

    assert pid_alive(os.getpid())


# --- the admin socket ---------------------------------------------------------------------------


def test_a_short_directory_holds_its_socket(tmp_path) -> None:
    directory = tmp_path / "d"

    assert socket_directory(directory, tmp_path / "short") == directory.absolute()


def test_a_socket_path_over_haproxys_limit_moves_to_a_short_private_directory(tmp_path) -> None:
    short = tmp_path / "s"
    fits = Path("/" + "d" * (haproxy_config.SOCKET_PATH_LIMIT - len("//admin.sock")))
    over = Path(str(fits) + "x")

    assert (
        len(str(socket_directory(fits, short) / "admin.sock")) == haproxy_config.SOCKET_PATH_LIMIT
    )
    moved = socket_directory(over, short)
    assert moved.parent == short and moved.name.startswith("goldenbake-haproxy-")
    assert socket_directory(over, short) == moved
    assert socket_directory(Path(str(over) + "y"), short) != moved


def test_a_long_directory_gets_its_socket_in_a_private_directory(tmp_path, admin, port) -> None:
    directory = tmp_path / ("d" * 100)
    balancer = HAProxy(FakeRunner(), directory, client=admin, short_root=tmp_path / "short")

    balancer.start(demo(port))

    sockets = balancer.sockets
    assert sockets.stat().st_mode & 0o777 == 0o700
    assert f"stats socket '{sockets}/admin.sock'" in (directory / "haproxy.cfg").read_text()
    balancer.stop()
    assert not sockets.exists()


def test_a_short_socket_directory_others_can_reach_is_refused(tmp_path, admin, port) -> None:
    directory = tmp_path / ("d" * 100)
    balancer = HAProxy(FakeRunner(), directory, client=admin, short_root=tmp_path / "short")
    balancer.sockets.mkdir(parents=True, mode=0o755)
    balancer.sockets.chmod(0o755)

    with pytest.raises(BakeError, match="not a private directory"):
        balancer.start(demo(port))


def test_the_client_sends_a_line_and_reads_the_reply_to_its_end(tmp_path) -> None:
    path = tmp_path / "admin.sock"
    received: list[bytes] = []
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()

    def answer() -> None:
        connection, _ = server.accept()
        with connection:
            received.append(connection.makefile("rb").readline())
            connection.sendall(b"New server ")
            connection.sendall(b"registered.\n")

    thread = threading.Thread(target=answer)
    thread.start()
    reply = UnixSocketClient(path).send("add server b/s 127.0.0.1:1")
    thread.join(timeout=5)
    server.close()

    assert received == [b"add server b/s 127.0.0.1:1\n"]
    assert reply == "New server registered.\n"


def test_a_socket_nobody_listens_on_is_an_error(tmp_path) -> None:
    with pytest.raises(BakeError, match="did not answer 'show info'"):
        UnixSocketClient(tmp_path / "admin.sock", timeout=1).send("show info")
