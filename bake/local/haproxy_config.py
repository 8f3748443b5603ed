"""The load balancer's desired state, as the supervisor derives it from the local cloud, and the
HAProxy configuration it renders to: a service's frontend and `svc-` backend weighing its target
groups, and each target group's frontend and `tg-` backend with its health check.

`bake.local.haproxy` runs HAProxy in that configuration and changes it at run time.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bake.errors import BakeError

HOST = "127.0.0.1"
MAX_WEIGHT = 256  # HAProxy's; an ALB's forward weights go to 999
# HAProxy 2.6 refuses a unix socket path over 97 bytes (sun_path's 107, less room for the
# ".<pid>.tmp" name it binds before renaming); longer ones move to a private directory here.
SOCKET_PATH_LIMIT = 97
SHORT_ROOT = Path("/tmp")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_UNSAFE_PATH = re.compile(r"[\s#'\"\\]")


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise BakeError(f"{kind} name {name!r} cannot be an HAProxy name")


def _status_codes(matcher: str) -> list[int]:
    """The HTTP codes of an ALB matcher: "200", "200,302", "200-299"."""
    codes: set[int] = set()
    for part in matcher.split(","):
        match = re.fullmatch(r"\s*(\d{3})(?:-(\d{3}))?\s*", part)
        low, high = (int(match[1]), int(match[2] or match[1])) if match else (0, 0)
        if not (match and 100 <= low <= high <= 599):
            raise BakeError(
                f"health check matcher {matcher!r} is not a list of HTTP codes or ranges",
                hint='for example "200", "200,302" or "200-299"',
            )
        codes.update(range(low, high + 1))
    return sorted(codes)


def _digits(values: list[int]) -> str:
    """A regex class for these digits: 5, [0-4], [0246]."""
    if len(values) == 1:
        return str(values[0])
    if values == list(range(values[0], values[-1] + 1)):
        return f"[{values[0]}-{values[-1]}]"
    return "[" + "".join(map(str, values)) + "]"


def status_expect(matcher: str) -> str:
    """The `http-check expect` line of an ALB matcher: exact for one code, else a regex."""
    codes = _status_codes(matcher)
    if len(codes) == 1:
        return f"http-check expect status {codes[0]}"
    patterns = []
    for hundred in sorted({code // 100 for code in codes}):
        tens = {t: [c % 10 for c in codes if c // 10 == hundred * 10 + t] for t in range(10)}
        if all(len(units) == 10 for units in tens.values()):
            patterns.append(f"{hundred}[0-9][0-9]")
            continue
        full = [t for t, units in tens.items() if len(units) == 10]
        if full:
            patterns.append(f"{hundred}{_digits(full)}[0-9]")
        patterns += [f"{hundred}{t}{_digits(u)}" for t, u in tens.items() if 0 < len(u) < 10]
    return f"http-check expect rstatus ^({'|'.join(patterns)})$"


@dataclass(frozen=True)
class HealthCheck:
    """A target group's HTTP health check. Checks go to the traffic port only: a numbered
    HealthCheckPort (and HTTPS) is not mirrored, since a machine's other guest ports are not
    forwarded to the host."""

    path: str = "/"
    matcher: str = "200"
    interval: int = 5
    timeout: int = 5
    healthy: int = 2
    unhealthy: int = 2
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or _UNSAFE_PATH.search(self.path):
            raise BakeError(
                f"health check path {self.path!r} must start with / and not hold "
                "spaces, quotes, # or backslashes"
            )
        _status_codes(self.matcher)
        for name in ("interval", "timeout", "healthy", "unhealthy"):
            if getattr(self, name) < 1:
                raise BakeError(
                    f"health check {name} must be at least 1, not {getattr(self, name)}"
                )

    @classmethod
    def from_target_group(cls, target_group: dict[str, Any]) -> HealthCheck:
        """The health check of a describe_target_groups entry; missing fields keep defaults."""
        fields = {
            "path": target_group.get("HealthCheckPath"),
            "matcher": (target_group.get("Matcher") or {}).get("HttpCode"),
            "interval": target_group.get("HealthCheckIntervalSeconds"),
            "timeout": target_group.get("HealthCheckTimeoutSeconds"),
            "healthy": target_group.get("HealthyThresholdCount"),
            "unhealthy": target_group.get("UnhealthyThresholdCount"),
            "enabled": target_group.get("HealthCheckEnabled"),
        }
        return cls(**{key: value for key, value in fields.items() if value is not None})

    def server_options(self) -> str:
        """What a server line needs for these checks (dynamic servers inherit no default-server)."""
        if not self.enabled:
            return "weight 1"
        return f"check inter {self.interval}s fall {self.unhealthy} rise {self.healthy} weight 1"


@dataclass(frozen=True)
class Server:
    """An instance in a target group: its id and the host port forwarded to its port 80."""

    name: str
    port: int
    address: str = HOST

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Backend:
    """A target group: its name, health check and the instances that should get traffic."""

    name: str
    health: HealthCheck
    servers: tuple[Server, ...] = ()


@dataclass(frozen=True)
class Frontend:
    """A service's listener: its port on 127.0.0.1 and target group name -> forward weight.
    `target_groups` are every backend it may forward to (a server each, at weight 0 when the
    listener does not name it); empty means the weights' names."""

    name: str
    port: int
    weights: dict[str, int] = field(default_factory=dict)
    target_groups: tuple[str, ...] = ()

    @property
    def members(self) -> tuple[str, ...]:
        extra = sorted(set(self.weights) - set(self.target_groups))
        return (*self.target_groups, *extra)

    def haproxy_weights(self) -> dict[str, int]:
        """The weights scaled into HAProxy's 0..256: 0 stays 0, anything else stays at least 1."""
        weights = {name: self.weights.get(name, 0) for name in self.members}
        top = max(weights.values(), default=0)
        if top <= MAX_WEIGHT:
            return weights
        return {name: w and max(1, round(w * MAX_WEIGHT / top)) for name, w in weights.items()}


@dataclass(frozen=True)
class Desired:
    """What HAProxy should run: the services' frontends and the target groups' backends."""

    frontends: tuple[Frontend, ...]
    backends: tuple[Backend, ...]

    def __post_init__(self) -> None:
        backends = {backend.name for backend in self.backends}
        for frontend in self.frontends:
            _check_name("service", frontend.name)
            if not 0 < frontend.port < 65536:
                raise BakeError(f"service {frontend.name}'s port {frontend.port} is not a TCP port")
            if missing := sorted(set(frontend.members) - backends):
                raise BakeError(
                    f"service {frontend.name} forwards to {', '.join(missing)}, "
                    "which has no backend"
                )
        for backend in self.backends:
            _check_name("target group", backend.name)
            for server in backend.servers:
                _check_name("server", server.name)

    def static(self) -> tuple[Any, ...]:
        """What only a new config (a reload) changes: frontends, backends and health checks."""
        return (
            tuple((f.name, f.port, f.members) for f in self.frontends),
            tuple((b.name, b.health) for b in self.backends),
        )

    def with_servers(self, servers: dict[str, tuple[Server, ...]]) -> Desired:
        """The same static part with these servers (backend name -> servers) instead."""
        backends = tuple(replace(b, servers=servers.get(b.name, ())) for b in self.backends)
        return replace(self, backends=backends)


def _tag(directory: Path) -> str:
    """A short name for a state directory, keeping two HAProxies' abstract sockets apart."""
    return hashlib.sha256(str(directory.absolute()).encode()).hexdigest()[:10]


def socket_directory(directory: Path, root: Path = SHORT_ROOT) -> Path:
    """Where the admin socket lives: `directory`, or `root/goldenbake-haproxy-<hash>` when the
    socket's path there would be over HAProxy's limit."""
    if len(os.fsencode(str(directory.absolute() / "admin.sock"))) <= SOCKET_PATH_LIMIT:
        return directory.absolute()
    return root / f"goldenbake-haproxy-{_tag(directory)}"


def _private(path: Path) -> bool:
    """Whether `path` is a directory (not a link) of this user that no one else can reach."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def _ensure_private(path: Path) -> None:
    """Make the short socket directory (0700), and refuse one another user could reach."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _private(path):
        raise BakeError(f"{path} is not a private directory of this user", hint="remove it")


def _quote(path: Path) -> str:
    if "'" in str(path) or "\n" in str(path):
        raise BakeError(f"HAProxy cannot use the path {path} (a quote or newline in it)")
    return f"'{path}'"


def _abns(directory: Path, target_group: str) -> str:
    return f"abns@bake-{_tag(directory)}-tg-{target_group}"


_GLOBAL = """\
# Written by goldenbake (bake/local/haproxy.py) on every start and reload; edits are lost.
global
    # One thread: 2.6.12's old workers crashed on exit after a reload under load with two.
    nbthread 1
    pidfile {pidfile}
    stats socket {admin} mode 600 level admin expose-fd listeners
    server-state-file {state}
    hard-stop-after 60s
    log stdout format raw local0

defaults
    mode http
    log global
    option httplog
    option redispatch 1
    retries 3
    retry-on conn-failure empty-response response-timeout 502 503 504
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # Idle keep-alive connections end soon, so an old worker leaves within a second of a reload.
    timeout http-keep-alive 1s
    load-server-state-from-file global
"""


def _service_section(frontend: Frontend, directory: Path) -> list[str]:
    # "svc-" keeps a service's frontend apart from the target groups' internal "tg-" frontends.
    lines = [
        f"\nfrontend svc-{frontend.name}",
        f"    bind {HOST}:{frontend.port}",
        f"    default_backend svc-{frontend.name}",
        f"\nbackend svc-{frontend.name}",
        "    balance roundrobin",
    ]
    for name, weight in frontend.haproxy_weights().items():
        lines.append(f"    server {name} {_abns(directory, name)} weight {weight}")
    return lines


def _target_group_section(backend: Backend, directory: Path) -> list[str]:
    health = backend.health
    lines = [
        f"\nfrontend tg-{backend.name}",
        f"    bind {_abns(directory, backend.name)}",
        f"    default_backend tg-{backend.name}",
        f"\nbackend tg-{backend.name}",
        "    balance roundrobin",
    ]
    if health.enabled:
        lines += [
            f"    option httpchk GET {health.path}",
            f"    {status_expect(health.matcher)}",
            f"    timeout check {health.timeout}s",
        ]
    for server in backend.servers:
        lines.append(f"    server {server.name} {server.endpoint} {health.server_options()}")
    return lines


def render(desired: Desired, directory: Path, *, sockets: Path | None = None) -> str:
    """The config text for `desired`, with the servers its backends list (pure)."""
    sockets = sockets or socket_directory(directory)
    directory = directory.absolute()
    lines = [
        _GLOBAL.format(
            pidfile=_quote(directory / "haproxy.pid"),
            admin=_quote(sockets / "admin.sock"),
            state=_quote(directory / "servers.state"),
        ).rstrip("\n")
    ]
    for frontend in desired.frontends:
        lines += _service_section(frontend, directory)
    for backend in desired.backends:
        lines += _target_group_section(backend, directory)
    return "\n".join(lines) + "\n"
