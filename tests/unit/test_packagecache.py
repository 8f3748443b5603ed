"""The local target's package cache, a real process answering real HTTP: files named by their
content are fetched from the archive once, indexes named by name are asked again every time, and
nothing incomplete is kept."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bake import localhost
from bake.local import packagecache
from bake.local.packagecache import RunningCache, cache_path
from bake.runner import Runner
from bake.state import StateDir
from tests.unit.fake_archive import Mirror


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDir]:
    state = StateDir(tmp_path / ".bake").ensure()
    yield state
    packagecache.down(state)  # never leave a cache behind, whatever the test did


@pytest.fixture
def cache(state: StateDir) -> RunningCache:
    return packagecache.up(Runner(), state)


def through(cache: RunningCache, url: str, headers: dict[str, str] | None = None):
    """GET `url` through the cache, as apt on a machine does; (status, body, cache header)."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": cache.proxy_for("127.0.0.1")})
    )
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as got:
            return got.status, got.read(), got.headers.get("X-Goldenbake-Cache")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("X-Goldenbake-Cache")


def upstream_requests(mirror: Mirror, path: str) -> int:
    return sum(1 for asked, _ in mirror.server.requests if asked == path)


def test_a_package_is_fetched_from_the_archive_once(cache: RunningCache, mirror: Mirror) -> None:
    deb = mirror.root / "debian" / "pool" / "main" / "h" / "hello" / "hello_2.10-3_amd64.deb"
    deb.parent.mkdir(parents=True)
    deb.write_bytes(b"\x00deb package" * 1000)
    url = f"{mirror.url}/debian/pool/main/h/hello/hello_2.10-3_amd64.deb"

    first = through(cache, url)
    deb.write_bytes(b"changed in the archive")  # a pool file never changes: the copy is served
    second = through(cache, url)

    assert first == (200, b"\x00deb package" * 1000, "miss")
    assert second == (200, b"\x00deb package" * 1000, "hit")
    assert upstream_requests(mirror, "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb") == 1
    kept = cache_path(Path(cache.directory), url)
    assert kept is not None and kept.read_bytes() == first[1]


def test_an_index_named_by_name_is_asked_of_the_archive_every_time(
    cache: RunningCache, mirror: Mirror
) -> None:
    mirror.publish("bookworm", ["hello 2.10-3 amd64"])
    url = f"{mirror.url}/debian/dists/bookworm/InRelease"

    first = through(cache, url)
    second = through(cache, url)
    mirror.publish("bookworm", ["hello 2.10-4 amd64"])
    third = through(cache, url)

    assert (first[0], first[2]) == (200, "miss")
    assert second == (200, first[1], "revalidated"), "unchanged: the archive said 304"
    assert (third[0], third[2]) == (200, "miss")
    assert b"2.10-4" not in first[1] and third[1] != first[1], "a new InRelease is seen at once"
    assert upstream_requests(mirror, "/debian/dists/bookworm/InRelease") == 3


def test_an_index_by_hash_is_kept(cache: RunningCache, mirror: Mirror) -> None:
    index = mirror.publish("bookworm-security", ["libssl3 3.0.22-1 amd64"], by_hash=True)
    digest = next((index.parent / "by-hash" / "SHA256").iterdir()).name
    path = f"/debian/dists/bookworm-security/main/binary-amd64/by-hash/SHA256/{digest}"

    assert through(cache, mirror.url + path)[2] == "miss"
    assert through(cache, mirror.url + path) == (200, index.read_bytes(), "hit")
    assert upstream_requests(mirror, path) == 1


def test_what_the_archive_refuses_is_passed_on_and_not_kept(
    cache: RunningCache, mirror: Mirror
) -> None:
    url = f"{mirror.url}/debian/pool/main/n/nothing/nothing_1_amd64.deb"

    assert through(cache, url)[0] == 404
    assert through(cache, url)[0] == 404
    assert upstream_requests(mirror, "/debian/pool/main/n/nothing/nothing_1_amd64.deb") == 2
    kept = cache_path(Path(cache.directory), url)
    assert kept is not None and not kept.exists()


def test_an_archive_that_does_not_answer_is_a_bad_gateway(cache: RunningCache) -> None:
    closed = localhost.free_port()

    status, body, _ = through(cache, f"http://127.0.0.1:{closed}/debian/pool/x.deb")

    assert status == 502
    assert b"cannot reach the archive" in body


class _Truncating(BaseHTTPRequestHandler):
    """Promises 1000 bytes, sends 10, and hangs up: a download cut short."""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_a_download_cut_short_is_not_kept(cache: RunningCache) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Truncating)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/debian/pool/main/c/cut/cut_1_amd64.deb"
    try:
        with pytest.raises(http.client.IncompleteRead):
            through(cache, url)
    finally:
        server.shutdown()
        server.server_close()
    kept = cache_path(Path(cache.directory), url)
    assert kept is not None and not kept.exists()
    assert not list(kept.parent.glob(".partial-*")), "the partial copy is removed"


def test_only_http_archive_files_go_through(cache: RunningCache) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{cache.port}/not/a/proxy/request")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("http://deb.debian.org/debian/pool/main/a/apt/apt_2.6.2_amd64.deb",
         "deb.debian.org/debian/pool/main/a/apt/apt_2.6.2_amd64.deb"),
        ("http://mirror:8080/debian/dists/bookworm/InRelease",
         "mirror_8080/debian/dists/bookworm/InRelease"),
        ("http://deb.debian.org/debian/../../etc/passwd", None),
        ("http://deb.debian.org/debian/pool/.hidden", None),
        ("https://deb.debian.org/debian/dists/bookworm/InRelease", None),
        ("/debian/dists/bookworm/InRelease", None),
        ("http://deb.debian.org/", None),
    ],
)  # fmt: skip
def test_where_a_copy_is_kept(tmp_path: Path, url: str, kept: str | None) -> None:
    assert cache_path(tmp_path, url) == (tmp_path / kept if kept else None)


def test_immutable_paths_are_the_pool_and_by_hash() -> None:
    assert packagecache.immutable("http://m/debian/pool/main/a/apt/apt_2.6.2_amd64.deb")
    assert packagecache.immutable("http://m/debian/dists/x/main/binary-amd64/by-hash/SHA256/ab")
    assert not packagecache.immutable("http://m/debian/dists/bookworm/InRelease")
    assert not packagecache.immutable(
        "http://m/debian/dists/bookworm/main/binary-amd64/Packages.gz"
    )


def test_up_reuses_the_running_cache_and_down_stops_it(state: StateDir) -> None:
    started = packagecache.up(Runner(), state)
    again = packagecache.up(Runner(), state)

    assert again == started
    recorded = json.loads((state.local / "package-cache.json").read_text())
    assert recorded["port"] == started.port and recorded["pid"] == started.pid
    assert packagecache.status(state) == {
        "running": True,
        "port": started.port,
        "pid": started.pid,
        "directory": str(state.root / "cache" / "packages"),
        "log": str(state.local / "package-cache.log"),
    }
    assert packagecache.down(state) is True
    assert not localhost.pid_alive(started.pid)
    assert packagecache.status(state)["running"] is False
    assert packagecache.down(state) is False


def test_a_recorded_pid_that_is_not_the_cache_is_left_alone(state: StateDir) -> None:
    """A pid reused since the cache died belongs to another process: it is never signalled."""
    record = {"port": 1, "pid": 1, "directory": str(state.root), "started": "then"}
    (state.local / "package-cache.json").write_text(json.dumps(record))

    assert packagecache.running(state) is None
    assert packagecache.down(state) is False
    assert localhost.pid_alive(1)
    assert not (state.local / "package-cache.json").exists()
