"""SSH through Session Manager without the AWS CLI: `python -m bake.aws.ssm_proxy` as ssh's
ProxyCommand starts the session with the pipeline's credentials, hands ssh's pipe to AWS's
session-manager-plugin (a stand-in here) as the AWS CLI would, and terminates the session after.
moto's SSM is patched in-process for the sessions (tests/integration/ssm_sessions.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from bake import ssh
from bake.aws import ssm_proxy
from bake.aws.session import Cloud
from bake.polling import wait_until
from tests.integration.ssm_sessions import SessionManager, install_plugin, plugin_starts
from tests.request_shapes import problems

GREETING = b"SSH-2.0-OpenSSH_9.2 stand-in\r\n"


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> SessionManager:
    manager = SessionManager()
    manager.patch(monkeypatch)
    return manager


@pytest.fixture
def server() -> Iterator[tuple[int, list[bytes]]]:
    """What the instance's sshd stands for: a TCP server on 127.0.0.1 that greets each connection,
    then answers every line it is sent; (its port, what it received)."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.sendall(GREETING)
                for line in connection.makefile("rb"):
                    received.append(line)
                    connection.sendall(b"you said: " + line)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], received
    listener.close()


def an_instance(cloud: Cloud) -> str:
    ec2 = cloud.client("ec2")
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]


def proxy(endpoint: str, instance: str, port: int, given: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bake.aws.ssm_proxy", "--region", "us-east-1",
         "--endpoint-url", endpoint, instance, str(port)],
        input=given, capture_output=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip


@pytest.mark.parametrize(("version", "in_a_variable"), [("1.2.707.0", True), ("1.2.497.0", False)])
def test_bytes_flow_through_the_proxy_and_the_session_is_the_one_aws_expects(
    tmp_path: Path, moto_endpoint: str, cloud: Cloud, monkeypatch, sessions: SessionManager,
    server, version: str, in_a_variable: bool,
) -> None:  # fmt: skip
    port, received = server
    log = install_plugin(tmp_path / "bin", monkeypatch, version)
    instance = an_instance(cloud)

    done = proxy(moto_endpoint, instance, port, b"hello\n")

    assert done.returncode == 0, done.stderr
    assert done.stdout == GREETING + b"you said: hello\n", "both ways, byte for byte"
    assert received == [b"hello\n"]
    (start,) = sessions.calls("StartSession")
    assert start == {
        "Target": instance,
        "DocumentName": "AWS-StartSSHSession",
        "Parameters": {"portNumber": [str(port)]},
    }
    ssm = boto3.session.Session().client("ssm", region_name="us-east-1")
    assert problems(ssm.meta.service_model.operation_model("StartSession").input_shape, start) == []
    (started,) = plugin_starts(log)
    session, argv = started["session"], started["argv"]
    # As the AWS CLI starts the plugin: the session, region, operation, profile, request, endpoint.
    assert argv[1:] == ["us-east-1", "StartSession", "", json.dumps(start), moto_endpoint]
    if in_a_variable:
        assert argv[0] == "AWS_SSM_START_SESSION_RESPONSE", "the token stays off the command line"
    else:
        assert json.loads(argv[0]) == session, "an older plugin takes the session itself"
    assert set(session) == {"SessionId", "TokenValue", "StreamUrl"}
    (terminated,) = sessions.calls("TerminateSession")
    assert terminated == {"SessionId": session["SessionId"]}, "no session is left open"


def test_without_the_plugin_the_proxy_says_how_to_install_it_and_ends_the_session(
    tmp_path: Path, moto_endpoint: str, cloud: Cloud, sessions: SessionManager, server
) -> None:
    port, received = server
    done = proxy(moto_endpoint, an_instance(cloud), port, b"hello\n")

    assert done.returncode == 255 and done.stdout == b""
    assert "session-manager-plugin is not installed" in done.stderr.decode()
    assert ssm_proxy.PLUGIN_DEB in done.stderr.decode()
    (start,) = sessions.calls("StartSession")
    assert len(sessions.calls("TerminateSession")) == 1
    assert received == []


def test_ssh_itself_goes_through_the_proxy_to_the_instance_it_names(
    tmp_path: Path, moto_endpoint: str, cloud: Cloud, monkeypatch, sessions: SessionManager,
    server,
) -> None:  # fmt: skip
    port, _ = server
    log = install_plugin(tmp_path / "bin", monkeypatch)
    instance = an_instance(cloud)
    command = ssm_proxy.proxy_command(Cloud("us-east-1", endpoint_url=moto_endpoint))
    config = ssh.write_ssh_config(tmp_path / "ssh", command)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    host = ssh.SshHost(instance, port, "admin", key, config, command)

    assert f"ProxyCommand {command}\n" in config.read_text()
    assert f"ssh_config={config}" in host.testinfra_url(), "testinfra's ssh reads it there"
    # The stand-in is no sshd: real ssh fails after the greeting, once it went through the proxy.
    subprocess.run(ssh.ssh_argv(host, "true"), capture_output=True, timeout=120)

    (started,) = plugin_starts(log)
    assert json.loads(started["argv"][4])["Target"] == instance, "ssh's %h: the instance id"
    assert json.loads(started["argv"][4])["Parameters"] == {"portNumber": [str(port)]}
    # ssh hangs up on the proxy as it exits; the proxy then ends the session, a moment later.
    assert wait_until(lambda: len(sessions.calls("TerminateSession")) == 1, 10, interval=0.1)


def test_the_proxy_command_carries_the_pipelines_identity() -> None:
    cloud = Cloud(
        "eu-west-1",
        profile="ci",
        role_arn="arn:aws:iam::111122223333:role/goldenbake",
        role_session_name="nightly",
    )
    command = ssm_proxy.proxy_command(cloud)

    assert command.startswith(f"{sys.executable} -m bake.aws.ssm_proxy --region eu-west-1 ")
    assert "--profile ci --role-arn arn:aws:iam::111122223333:role/goldenbake" in command
    assert "--role-session-name nightly" in command and command.endswith(" %h %p")
    odd = ssm_proxy.proxy_command(Cloud("eu-west-1", endpoint_url="http://h:1/p%20q"))
    assert "http://h:1/p%%20q" in odd, "a literal % is doubled for ssh_config"
