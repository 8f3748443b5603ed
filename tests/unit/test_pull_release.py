"""packer/scripts/pull-release.py, the boot-time agent of the pull-deploy step, run as the machine
runs it: against the local target's real metadata service (bake.local.imds, served over TCP here
as QEMU serves it to a guest) and a release store answering real HTTP, with its paths moved into
a temporary folder."""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import io
import json
import os
import socketserver
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from bake.local import imds
from bake.releases import Release, pack, user_data_for

AGENT = Path(__file__).resolve().parents[2] / "packer" / "scripts" / "pull-release.py"


class _Metadata(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        imds.serve(self.rfile, self.wfile, self.server.document)  # type: ignore[attr-defined]


@dataclass
class Machine:
    """What the agent sees: its metadata service, the store, and its folders."""

    metadata_url: str
    store_url: str
    store: Path
    app_dir: Path
    run_dir: Path
    servers: list[socketserver.BaseServer]

    def name(self, user_data: str | None) -> None:
        """The instance's user data (base64, as the launch template holds it)."""
        document = imds.new_document(
            instance_id="i-0123456789abcdef0",
            ami_id="ami-0123456789abcdef0",
            instance_type="t3.micro",
            region="us-east-1",
            availability_zone="us-east-1a",
            local_ipv4="169.254.0.15",
            launched="2026-12-07T09:00:00Z",
            user_data=None if user_data is None else base64.b64decode(user_data),
            http_tokens="required",
        )
        self.servers[0].document = document  # type: ignore[attr-defined]

    def publish(self, app: Path, version: str, *, corrupt: bool = False) -> Release:
        """Store `app` as a release in the store's bucket; with `corrupt`, other bytes than the
        release names."""
        packed = pack(app)
        key = self.store / "releases" / "demo" / f"{version}.tar.gz"
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(packed.data + (b"tampered" if corrupt else b""))
        return Release(
            "demo",
            version,
            packed.sha256,
            packed.size,
            f"s3://releases/demo/{version}.tar.gz",
            self.store_url,
        )

    def boot(self, patience: float = 3) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "BAKE_IMDS_URL": self.metadata_url,
            "BAKE_APP_DIR": str(self.app_dir),
            "BAKE_APP_USER": "nobody-here",
            "BAKE_RUN_DIR": str(self.run_dir),
            "BAKE_RELEASE_PATIENCE": str(patience),
        }
        return subprocess.run(
            [sys.executable, str(AGENT)], env=env, capture_output=True, text=True, timeout=60
        )

    def said(self) -> dict:
        return json.loads((self.run_dir / "release.json").read_text())


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    metadata = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Metadata)
    metadata.daemon_threads = True
    store = tmp_path / "store"
    store.mkdir()
    files = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(store))
    )
    servers: list[socketserver.BaseServer] = [metadata, files]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    made = Machine(
        f"http://127.0.0.1:{metadata.server_address[1]}",
        f"http://127.0.0.1:{files.server_address[1]}",
        store,
        tmp_path / "srv" / "app",
        tmp_path / "run" / "bake",
        servers,
    )
    made.name(None)
    yield made
    for server in servers:
        server.shutdown()
        server.server_close()


def application(root: Path, greeting: str) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "index.html").write_text(greeting)
    (root / "bin" / "start").write_text("#!/bin/sh\nexec sleep infinity\n")
    (root / "bin" / "start").chmod(0o755)
    return root


def test_no_release_named_is_nothing_to_install(machine: Machine) -> None:
    done = machine.boot()

    assert done.returncode == 0, done.stderr
    assert machine.said()["release"] is None
    assert not machine.app_dir.exists()


def test_the_named_release_is_installed_and_made_current(machine: Machine, tmp_path: Path) -> None:
    release = machine.publish(application(tmp_path / "one", "<h1>one</h1>"), "1.0")
    machine.name(user_data_for(release, None))

    done = machine.boot()

    assert done.returncode == 0, done.stderr
    current = machine.app_dir / "current"
    assert current.is_symlink() and os.readlink(current) == "releases/1.0"
    assert (current / "index.html").read_text() == "<h1>one</h1>"
    assert os.access(current / "bin" / "start", os.X_OK)
    said = machine.said()
    assert (said["release"], said["sha256"]) == ("1.0", release.sha256)
    assert said["directory"] == str(machine.app_dir / "releases" / "1.0")


def test_the_next_release_replaces_current_and_the_same_one_again_is_kept(
    machine: Machine, tmp_path: Path
) -> None:
    first = machine.publish(application(tmp_path / "one", "one"), "1.0")
    second = machine.publish(application(tmp_path / "two", "two"), "2.0")
    machine.name(user_data_for(first, None))
    machine.boot()
    machine.name(user_data_for(second, None))

    assert machine.boot().returncode == 0
    assert (machine.app_dir / "current" / "index.html").read_text() == "two"
    assert machine.boot().returncode == 0, "a reboot on the same release"
    assert sorted(p.name for p in (machine.app_dir / "releases").iterdir()) == ["1.0", "2.0"]


def test_a_release_that_does_not_verify_is_refused_and_nothing_is_current(
    machine: Machine, tmp_path: Path
) -> None:
    release = machine.publish(application(tmp_path / "one", "one"), "1.0", corrupt=True)
    machine.name(user_data_for(release, None))

    done = machine.boot()

    assert done.returncode == 1
    assert "refused" in done.stderr
    said = machine.said()
    assert said["release"] == "1.0" and "not " + release.sha256 in said["error"]
    assert not (machine.app_dir / "current").exists()


def test_a_release_that_cannot_be_had_fails_after_its_patience(
    machine: Machine, tmp_path: Path
) -> None:
    release = machine.publish(application(tmp_path / "one", "one"), "1.0")
    missing = Release(
        "demo", "9.9", release.sha256, 1, "s3://releases/demo/9.9.tar.gz", machine.store_url
    )
    machine.name(user_data_for(missing, None))

    done = machine.boot()

    assert done.returncode == 1
    assert "HTTP 404" in machine.said()["error"]


def test_the_release_is_found_in_multipart_user_data(machine: Machine, tmp_path: Path) -> None:
    release = machine.publish(application(tmp_path / "one", "one"), "1.0")
    theirs = base64.b64encode(b"#!/bin/sh\necho hi\n").decode()
    machine.name(user_data_for(release, theirs))

    assert machine.boot().returncode == 0
    assert machine.said()["release"] == "1.0"


def test_an_archive_reaching_outside_is_refused_by_the_machine_too(
    machine: Machine, tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("../../outside")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"bad"))
    data = buffer.getvalue()
    key = machine.store / "releases" / "demo" / "bad.tar.gz"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    bad = Release("demo", "bad", sha, len(data), "s3://releases/demo/bad.tar.gz", machine.store_url)
    machine.name(user_data_for(bad, None))

    done = machine.boot()

    assert done.returncode == 1
    assert "would land outside" in machine.said()["error"]
    assert not (tmp_path / "srv" / "outside").exists()


def agent_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pull_release", AGENT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("token", [None, "a-session-token"])
def test_the_agent_signs_as_aws_does(token: str | None, monkeypatch) -> None:
    """Its Signature Version 4 headers are botocore's, for the instance role's credentials."""
    agent = agent_module()
    url = "https://releases.s3.eu-west-1.amazonaws.com/demo/1.4.2%2Bbuild.tar.gz"
    moment = datetime.datetime(2026, 12, 7, 9, 30, 0, tzinfo=datetime.UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: moment)

    ours = agent.signed_headers(url, "eu-west-1", ("AKIDEXAMPLE", "secret", token), moment)

    request = AWSRequest(method="GET", url=url)
    S3SigV4Auth(Credentials("AKIDEXAMPLE", "secret", token), "s3", "eu-west-1").add_auth(request)
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["x-amz-date"] == request.headers["X-Amz-Date"]
    assert ours.get("x-amz-security-token") == request.headers.get("X-Amz-Security-Token")


def test_the_store_address_follows_the_release() -> None:
    agent = agent_module()
    local = {
        "url": "s3://goldenbake-releases/demo/1.0.tar.gz",
        "endpoint": "http://169.254.0.1:4566/",
    }
    aws = {"url": "s3://team-releases/apps/shop/1.0.tar.gz"}

    assert agent.object_url(local, "us-east-1") == (
        "http://169.254.0.1:4566/goldenbake-releases/demo/1.0.tar.gz"
    )
    assert agent.object_url(aws, "eu-west-1") == (
        "https://team-releases.s3.eu-west-1.amazonaws.com/apps/shop/1.0.tar.gz"
    )
