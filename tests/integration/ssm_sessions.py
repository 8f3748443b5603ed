"""Session Manager where moto has none: its server patched in-process to start, terminate and list
sessions and to report instances' SSM agents, and a stand-in for AWS's session-manager-plugin.

moto 5.2 implements neither `StartSession`, `TerminateSession` nor `DescribeInstanceInformation`.
`SessionManager` adds them to moto's SSM responses (the test session's moto server runs in this
process), recording every request as it came. The plugin stand-in (`install_plugin`) is a script put
first on PATH: it records how it was started (its arguments, and the session it was handed) and,
for an SSH session (`AWS-StartSSHSession`), connects to 127.0.0.1 on the session's port and pipes
its stdin and stdout through, as the real plugin does through the instance's agent; a port
forwarding session (Packer's `AWS-StartPortForwardingSession`) is held open until it is stopped.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.ssm.responses import SimpleSystemManagerResponse

PLUGIN_VERSION = "1.2.707.0"

PLUGIN = """#!{python}
import json, os, socket, sys, threading, time

if sys.argv[1:] == ["--version"]:
    print("{version}")
    sys.exit(0)
args = sys.argv[1:]
given = args[0]
session = json.loads(os.environ[given] if given == "AWS_SSM_START_SESSION_RESPONSE" else given)
request = json.loads(args[4])
with open(os.environ["FAKE_PLUGIN_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "session": session}}) + "\\n")
if request["DocumentName"] != "AWS-StartSSHSession":
    while True:  # a port forwarding session lasts until its owner stops it
        time.sleep(1)
port = int(request["Parameters"]["portNumber"][0])
connection = socket.create_connection(("127.0.0.1", port))

def upstream():
    while True:
        data = os.read(0, 65536)
        if not data:
            connection.shutdown(socket.SHUT_WR)
            return
        connection.sendall(data)

threading.Thread(target=upstream, daemon=True).start()
while True:
    data = connection.recv(65536)
    if not data:
        break
    os.write(1, data)
"""


def install_plugin(
    directory: Path, monkeypatch: pytest.MonkeyPatch, version: str = PLUGIN_VERSION
) -> Path:
    """A session-manager-plugin stand-in (of `version`) first on PATH; the log it appends each
    start to."""
    directory.mkdir(parents=True, exist_ok=True)
    plugin = directory / "session-manager-plugin"
    plugin.write_text(PLUGIN.format(python=sys.executable, version=version))
    plugin.chmod(0o755)
    log = directory / "plugin.jsonl"
    log.touch()
    monkeypatch.setenv("PATH", f"{directory}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PLUGIN_LOG", str(log))
    return log


def plugin_starts(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


class SessionManager:
    """moto's SSM with sessions and agents. `requests` holds every StartSession,
    TerminateSession and DescribeInstanceInformation request (its action and parameters, as
    sent); with `online` false no agent ever registers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.online = True

    def calls(self, action: str) -> list[dict[str, Any]]:
        return [params for name, params in self.requests if name == action]

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        manager = self

        def start_session(response: SimpleSystemManagerResponse) -> ActionResult:
            params = json.loads(response.body)
            manager.requests.append(("StartSession", params))
            session_id = f"goldenbake-{uuid.uuid4().hex[:17]}"
            return ActionResult(
                {
                    "SessionId": session_id,
                    "TokenValue": f"token-{session_id}",
                    "StreamUrl": (
                        f"wss://ssmmessages.{response.region}.amazonaws.com/v1/data-channel/"
                        f"{session_id}?role=publish_subscribe"
                    ),
                }
            )

        def terminate_session(response: SimpleSystemManagerResponse) -> ActionResult:
            params = json.loads(response.body)
            manager.requests.append(("TerminateSession", params))
            return ActionResult({"SessionId": params["SessionId"]})

        def describe_instance_information(response: SimpleSystemManagerResponse) -> ActionResult:
            params = json.loads(response.body)
            manager.requests.append(("DescribeInstanceInformation", params))
            wanted = {
                value
                for given in params.get("Filters", [])
                if given["Key"] == "InstanceIds"
                for value in given["Values"]
            }
            ec2 = ec2_backends[response.current_account][response.region]
            found = [
                {"InstanceId": instance.id, "PingStatus": "Online", "PlatformType": "Linux"}
                for instance in ec2.all_instances()
                if manager.online and instance.id in wanted and instance.state == "running"
            ]
            return ActionResult({"InstanceInformationList": found})

        for function in (start_session, terminate_session, describe_instance_information):
            monkeypatch.setattr(
                SimpleSystemManagerResponse, function.__name__, function, raising=False
            )
