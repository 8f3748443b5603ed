"""Time a fleet-wide `bake rollout --swap-only` on the aws target against a moto server, and count
the AWS calls one swap makes, at the server.

    .venv/bin/python bench/rollout.py [--services 50] [--parallel 10]

1. Starts a moto server on 127.0.0.1 that counts every request it answers (service and action).
2. Sets up, untimed: a source AMI, SERVICES services on image `base` with their blue colour, and
   `base` baked once (Packer really builds against the server; the verification's ssh and suites
   are answered as the integration tests answer them, since moto's instances are records).
3. Times `bake swap` of one service and prints every call it made.
4. Times `bake rollout --swap-only --all --parallel PARALLEL --no-proof` over the rest, and prints
   the calls per swap, the wall time and what the rollout reported.
5. Times `bake --help`.
"""

from __future__ import annotations

import argparse
import collections
import io
import logging
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from common import REPO
from common import bake as run_bake

sys.path.insert(0, str(REPO))


class Counter:
    """A WSGI middleware that counts each request by `service:Action`."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.calls: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        name = self._name(environ)
        if name:
            with self.lock:
                self.calls[name] += 1
        return self.app(environ, start_response)

    @staticmethod
    def _name(environ: dict[str, Any]) -> str | None:
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return None
        auth = environ.get("HTTP_AUTHORIZATION", "")
        service = auth.split("Credential=", 1)[-1].split("/")[3] if "Credential=" in auth else "?"
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return f"{service}:{target.rsplit('.', 1)[-1]}"
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        action = (form.get("Action") or query.get("Action") or [None])[0]
        return f"{service}:{action or environ.get('REQUEST_METHOD')}"

    def take(self) -> collections.Counter[str]:
        with self.lock:
            taken, self.calls = self.calls, collections.Counter()
        return taken


def start_server() -> tuple[str, Counter]:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    counter = Counter(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, counter, True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return f"http://{host}:{port}", counter


SERVICE = """
[services.{name}]
image = "base"
capacity = 2
health_timeout = 30
soak = 0
"""


def set_up(endpoint: str, work: Path, services: int) -> Path:
    from bake.aws.session import Cloud
    from bake.local import seed
    from tests.integration.aws_project import make_app, publish_source_ami, write_config

    cloud = Cloud("us-east-1", endpoint_url=endpoint)
    source = publish_source_ami(cloud)
    config = write_config(work, endpoint)
    text = config.read_text()
    text = text[: text.index("[services.demo]")]
    text += "".join(SERVICE.format(name=f"svc{n:02d}") for n in range(services))
    config.write_text(text)
    app = make_app(config)
    seed.ensure_seeded(cloud, app.config, source)
    app.run("bake", image="base")
    return config


def bake(config: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = run_bake(config, config.parent / "state", *args, check=False)
    return time.monotonic() - started, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=10)
    args = parser.parse_args()
    endpoint, counter = start_server()
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as work:
        started = time.monotonic()
        config = set_up(endpoint, Path(work), args.services)
        print(f"set-up ({args.services} services seeded, base baked): "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip
        counter.take()

        seconds, done = bake(config, "swap", "svc00")
        assert done.returncode == 0, done.stderr
        one = counter.take()
        print(f"\none swap: {seconds:.1f} s, {sum(one.values())} AWS calls")
        for name, count in sorted(one.items(), key=lambda item: (-item[1], item[0])):
            print(f"  {count:3d}  {name}")

        seconds, done = bake(
            config, "rollout", "--swap-only", "--all", "--parallel", str(args.parallel),
            "--no-proof",
        )  # fmt: skip
        calls = counter.take()
        swaps = args.services - 1
        print(f"\nrollout --swap-only --all --parallel {args.parallel} ({swaps} swaps): "
              f"{seconds:.1f} s, exit {done.returncode}, {sum(calls.values())} AWS calls "
              f"({sum(calls.values()) / swaps:.1f} a swap, the plan's included)")  # fmt: skip
        print("  " + (done.stdout.strip().splitlines() or ["(no output)"])[-1])
        if done.returncode:
            print(done.stderr[-2000:])

    timings = []
    for _ in range(5):
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "bake", "--help"], capture_output=True, check=True)
        timings.append(time.monotonic() - started)
    print(f"\nbake --help: best {min(timings):.2f} s, worst {max(timings):.2f} s of 5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
