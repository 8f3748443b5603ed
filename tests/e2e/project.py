"""The goldenbake project of this checkout, driven through the `bake` command as a user runs it,
in the end-to-end session's state directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from bake.polling import wait_until

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Project:
    state: Path
    config: Path

    def argv(self, *args: str, config: Path | None = None) -> list[str]:
        """The command line of `bake ARGS`, run from this checkout (cwd REPO) by `environment()`."""
        return [sys.executable, "-m", "bake", "--config", str(config or self.config), *args]

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "BAKE_STATE_DIR": str(self.state)}
        env.pop("BAKE_CONFIG", None)
        return env

    def bake(self, *args: str, config: Path | None = None) -> Result:
        process = subprocess.run(
            self.argv(*args, config=config),
            capture_output=True,
            text=True,
            env=self.environment(),
            cwd=REPO,
            timeout=3600,
        )
        return Result(process.returncode, process.stdout, process.stderr)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """`bake ARGS` in the background, its output in pipes."""
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.environment(),
            cwd=REPO,
        )

    def ok(self, *args: str, config: Path | None = None) -> Result:
        result = self.bake(*args, config=config)
        assert result.code == 0, (
            f"bake {' '.join(args)} exited {result.code}:\n{result.err[-3000:]}"
        )
        return result

    def status(self, config: Path | None = None) -> dict[str, Any]:
        """`bake status demo --json`. Like every command of a service it has the data plane
        follow its config: pass the config that names every service still running."""
        return self.ok("--json", "status", "demo", config=config).json

    def local(self) -> dict[str, Any]:
        """`bake local status --json`: the cloud, each service's URL, the machines."""
        return self.ok("--json", "local", "status").json

    def url(self, service: str = "demo") -> str:
        return self.local()["services"][service]["url"]

    def machines(self, color: str | None = None, service: str = "demo") -> list[dict[str, Any]]:
        """The service's machines (of one colour), as `bake local status` lists them."""
        return [
            machine
            for machine in self.local()["machines"]
            if machine["service"] == service and color in (None, machine["color"])
        ]

    def ids(self, color: str, service: str = "demo") -> set[str]:
        """The instance ids of the service's machines of one colour."""
        return {machine["instance_id"] for machine in self.machines(color, service)}

    def machines_up(
        self, color: str | None = None, service: str = "demo", timeout: float = 300
    ) -> list[dict[str, Any]]:
        """The service's machines (of one colour) once every one answers SSH (`state` running).
        A machine can serve HTTP, and count as healthy, before its sshd has started: on a first
        boot it waits for the machine's new host keys, which take long under emulation."""
        found: list[dict[str, Any]] = []

        def all_up() -> bool:
            found[:] = self.machines(color, service)
            return bool(found) and {machine["state"] for machine in found} == {"running"}

        assert wait_until(all_up, timeout, interval=5), f"not every machine came up: {found}"
        return found

    def aws(self, service: str) -> Any:
        """Any AWS client pointed at the local endpoint, as a user would make one."""
        endpoint = self.ok("--json", "local", "status").json["endpoint"]
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="any",
            aws_secret_access_key="any",
        )


def variant(tmp_path: Path, *changes: tuple[str, str]) -> Path:
    """A copy of the shipped bake.toml with `changes` made, its paths pointing into the checkout."""
    text = (REPO / "bake.toml").read_text()
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    for folder in ("serverspec_tests/", "packer/scripts/"):
        text = text.replace(f'"{folder}', f'"{REPO / folder}/')
    config = tmp_path / "bake.toml"
    config.write_text(f'packer_dir = "{REPO / "packer"}"\n{text}')
    return config
