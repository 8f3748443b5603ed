"""The local target's package cache: an HTTP proxy on 127.0.0.1 that keeps what the Debian archive
serves to build and verification machines, shared by every bake and every day's runs.

apt on a machine reaches it through QEMU's host address and is pointed at it on its own command
line (`Acquire::http::Proxy`), so nothing of it stays in an image. Files whose path names their
content (`pool/...`, `.../by-hash/...`) are downloaded once and served from disk after that; an
index addressed by name (`InRelease`, `Packages.xz`) is asked of the archive every time, with
If-Modified-Since, so a machine sees the archive as it is now and a 304 costs one small answer;
anything else passes through. apt checks every file against the archive's signed indexes, as it
does without a proxy.

`up` starts it (or finds the one running), `down` stops it; it outlives the command, as the moto
server does. Run as `python -m bake.local.packagecache --cache DIR --port N`.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import http.client
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bake.errors import BakeError
from bake.localhost import free_port, pid_alive, runs
from bake.polling import wait_until
from bake.runner import Runner
from bake.state import StateDir

MODULE = "bake.local.packagecache"
HOST = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_GRACE = 5.0
UPSTREAM_TIMEOUT = 60.0
CHUNK = 1 << 16
# Where apt on a QEMU machine finds this host (user networking's address of the host).
PACKER_GUEST_HOST = "10.0.2.2"


@dataclass(frozen=True)
class RunningCache:
    """A running package cache: where it listens, its process, and where it keeps files."""

    port: int
    pid: int
    directory: str
    started: str

    def proxy_for(self, host_address: str) -> str:
        """The proxy URL a machine whose host is at `host_address` gives apt."""
        return f"http://{host_address}:{self.port}/"


def immutable(path: str) -> bool:
    """Whether an archive path names its content, so a copy never goes stale."""
    return "/pool/" in path or "/by-hash/" in path


def cache_path(directory: Path, url: str) -> Path | None:
    """Where the copy of `url` is kept; None for what is not an http:// archive file."""
    parts = urlsplit(url)
    segments = [segment for segment in parts.path.split("/") if segment]
    if parts.scheme != "http" or not parts.hostname or not segments:
        return None
    if any(segment in (".", "..") or segment.startswith(".") for segment in segments):
        return None
    host = parts.hostname + (f"_{parts.port}" if parts.port else "")
    return directory.joinpath(host, *segments)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _CacheServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        self.server.log(f"{self.address_string()} {format % args}")

    def _answer(self, send_body: bool) -> None:
        url = self.path
        kept = cache_path(self.server.directory, url)
        if kept is None:
            self.send_error(400, "only http:// archive files go through this proxy")
            return
        if immutable(url) and kept.is_file():
            self._send_file(kept, send_body, "hit")
            return
        headers = {"User-Agent": self.headers.get("User-Agent", "goldenbake-package-cache")}
        if kept.is_file():
            headers["If-Modified-Since"] = email.utils.formatdate(kept.stat().st_mtime, usegmt=True)
        request = urllib.request.Request(url, headers=headers)
        try:
            upstream = urllib.request.urlopen(request, timeout=UPSTREAM_TIMEOUT)
        except urllib.error.HTTPError as exc:
            if exc.code == 304 and kept.is_file():
                self._send_file(kept, send_body, "revalidated")
            else:
                self._relay_error(exc.code, str(exc.reason))
            return
        except OSError as exc:  # a refused connection, a name that does not resolve, a timeout
            self._relay_error(502, f"cannot reach the archive: {getattr(exc, 'reason', exc)}")
            return
        with upstream:
            self._send_fetched(upstream, kept, send_body)

    def _send_file(self, path: Path, send_body: bool, outcome: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Last-Modified", email.utils.formatdate(path.stat().st_mtime, usegmt=True))
        self.send_header("X-Goldenbake-Cache", outcome)
        self.end_headers()
        if send_body:
            with path.open("rb") as source:
                shutil.copyfileobj(source, self.wfile, CHUNK)

    def _send_fetched(self, upstream: Any, kept: Path, send_body: bool) -> None:
        """Stream the archive's answer to apt, and keep a complete copy of it."""
        length = upstream.headers.get("Content-Length")
        modified = upstream.headers.get("Last-Modified")
        self.send_response(200)
        if length is not None:
            self.send_header("Content-Length", length)
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        kind = upstream.headers.get("Content-Type", "application/octet-stream")
        self.send_header("Content-Type", kind)
        if modified:
            self.send_header("Last-Modified", modified)
        self.send_header("X-Goldenbake-Cache", "miss")
        self.end_headers()
        if not send_body:
            return
        kept.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=kept.parent, prefix=".partial-", delete=False) as copy:
            try:
                received, held = _copy_to_both(upstream, self.wfile, copy)
            except (http.client.HTTPException, OSError):  # the archive hung up part way
                received, held = -1, b""
        partial = Path(copy.name)
        if received < 0 or (length is not None and received != int(length)):
            partial.unlink(missing_ok=True)
            self.close_connection = True  # apt sees a short answer, and asks again
            return
        if modified:
            with contextlib.suppress(TypeError, ValueError):
                stamp = email.utils.parsedate_to_datetime(modified).timestamp()
                os.utime(partial, (stamp, stamp))
        partial.replace(kept)
        with contextlib.suppress(OSError):  # kept first: whoever asks after apt has it, hits
            self.wfile.write(held)

    def _relay_error(self, status: int, reason: str) -> None:
        body = f"{status} {reason}\n".encode()
        self.send_response(status, reason)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _copy_to_both(source: Any, client: Any, copy: Any) -> tuple[int, bytes]:
    """Copy `source` into the file `copy` and, while it listens, to `client`, all but the last
    chunk, which is returned for the caller to send once the copy is kept: (bytes read, chunk)."""
    received = 0
    listening = True
    held = b""
    while chunk := source.read(CHUNK):
        received += len(chunk)
        copy.write(chunk)
        if listening and held:
            try:
                client.write(held)
            except OSError:  # apt went away; the copy is still worth finishing
                listening = False
        held = chunk
    return received, held if listening else b""


class _CacheServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, directory: Path) -> None:
        super().__init__((HOST, port), _Handler)
        self.directory = directory
        self._lock = threading.Lock()

    def log(self, line: str) -> None:
        with self._lock:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(f"{stamp} {line}", file=sys.stderr, flush=True)


# the process, seen from the commands that start and stop it


def _record(state: StateDir) -> Path:
    return state.local / "package-cache.json"


def log_path(state: StateDir) -> Path:
    return state.local / "package-cache.log"


def directory(state: StateDir) -> Path:
    """Where the cache keeps its files: beside the image store, kept by `bake local down`."""
    return state.root / "cache" / "packages"


def _read(state: StateDir) -> RunningCache | None:
    try:
        return RunningCache(**json.loads(_record(state).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def running(state: StateDir) -> RunningCache | None:
    """The recorded cache, if its process is alive and still ours."""
    recorded = _read(state)
    if recorded and runs(recorded.pid, MODULE, recorded.directory):
        return recorded
    return None


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def up(runner: Runner, state: StateDir) -> RunningCache:
    """Start the package cache, or return the one already running."""
    found = running(state)
    if found:
        return found
    _record(state).unlink(missing_ok=True)
    state.local.mkdir(parents=True, exist_ok=True)
    cache_dir = directory(state)
    cache_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(HOST)
    process = runner.spawn(
        [sys.executable, "-m", MODULE, "--cache", str(cache_dir), "--port", str(port)],
        log_path=log_path(state),
    )
    if (
        not wait_until(
            lambda: process.poll() is not None or _listening(port), START_TIMEOUT, interval=0.1
        )
        or process.poll() is not None
    ):
        process.stop(grace=STOP_GRACE)
        raise BakeError(
            f"the package cache did not listen on {HOST}:{port} within {START_TIMEOUT:.0f}s",
            hint=f"see {log_path(state)}",
        )
    started = RunningCache(
        port, process.pid, str(cache_dir), datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    _record(state).write_text(json.dumps(asdict(started), indent=2) + "\n", encoding="utf-8")
    return started


def down(state: StateDir) -> bool:
    """Stop the package cache (its files stay); True if it was running."""
    found = running(state)
    if found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(found.pid, signal.SIGTERM)
        if not wait_until(lambda: not pid_alive(found.pid), STOP_GRACE, interval=0.1):
            with contextlib.suppress(ProcessLookupError):
                os.kill(found.pid, signal.SIGKILL)
    _record(state).unlink(missing_ok=True)
    return found is not None


def status(state: StateDir) -> dict[str, Any]:
    found = running(state)
    return {
        "running": found is not None,
        "port": found.port if found else None,
        "pid": found.pid if found else None,
        "directory": str(directory(state)),
        "log": str(log_path(state)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--cache", type=Path, required=True, help="where copies are kept")
    parser.add_argument("--port", type=int, required=True, help="the port on 127.0.0.1")
    options = parser.parse_args(argv)
    server = _CacheServer(options.port, options.cache)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.log(f"package cache on {HOST}:{options.port}, keeping files in {options.cache}")
    with server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
