"""SSH's ProxyCommand through Session Manager: `python -m bake.aws.ssm_proxy [...] INSTANCE PORT`.

It starts a session to the instance's port (the `AWS-StartSSHSession` document) with the
pipeline's own credentials (region, profile, role and endpoint, as `bake.aws.session.Cloud` makes
them) and hands ssh's stdin and stdout to AWS's session-manager-plugin, with the arguments the AWS
CLI gives it, so no AWS CLI is needed. When the plugin ends (ssh closed the connection, or a
signal stopped it) the session is terminated, with the same credentials.

The plugin is run as a child rather than exec'd into, for that last step: the plugin cannot assume
`role_arn` itself, and a session left open lasts until Session Manager's idle timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from contextlib import suppress
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bake.aws.session import Cloud

PLUGIN = "session-manager-plugin"
DOCUMENT = "AWS-StartSSHSession"
# Plugins newer than this one read the session from this environment variable, named in place of
# the session's JSON, which so stays off the command line (the AWS CLI does the same).
LAST_PLUGIN_WITHOUT_VARIABLE = (1, 2, 497, 0)
SESSION_VARIABLE = "AWS_SSM_START_SESSION_RESPONSE"
PLUGIN_DEB = (
    "https://s3.amazonaws.com/session-manager-downloads/plugin/latest/ubuntu_64bit/"
    "session-manager-plugin.deb"
)
INSTALL_HINT = f"install AWS's Session Manager plugin: download {PLUGIN_DEB}, then dpkg -i it"


def proxy_command(cloud: Cloud) -> str:
    """The ProxyCommand that reaches `%h` (an instance id) port `%p` through Session Manager as
    `cloud`'s identity, written for an ssh_config (a literal % doubled)."""
    words = [sys.executable, "-m", "bake.aws.ssm_proxy", "--region", cloud.region]
    for option, value in (
        ("--profile", cloud.profile),
        ("--role-arn", cloud.role_arn),
        ("--role-session-name", cloud.role_session_name if cloud.role_arn else None),
        ("--endpoint-url", cloud.endpoint_url),
    ):
        if value:
            words += [option, value]
    quoted = " ".join(shlex.quote(word).replace("%", "%%") for word in words)
    return f"{quoted} %h %p"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bake.aws.ssm_proxy",
        description="SSH to an EC2 instance through Session Manager (an ssh ProxyCommand).",
    )
    parser.add_argument("instance", help="the instance id (ssh's %%h)")
    parser.add_argument("port", type=int, help="its SSH port (ssh's %%p)")
    parser.add_argument("--region", required=True)
    parser.add_argument("--profile")
    parser.add_argument("--role-arn")
    parser.add_argument("--role-session-name", default="goldenbake")
    parser.add_argument("--endpoint-url")
    return parser


def _plugin_version() -> tuple[int, ...] | None:
    """The installed plugin's version; None when it names none."""
    answer = subprocess.run([PLUGIN, "--version"], capture_output=True, text=True, timeout=60)
    found = re.search(r"\d+(\.\d+){1,3}", answer.stdout)
    return tuple(int(part) for part in found.group(0).split(".")) if found else None


def plugin_argv(
    session: dict[str, Any], request: dict[str, Any], cloud: Cloud, endpoint: str
) -> tuple[list[str], dict[str, str]]:
    """The plugin's command line and the environment it adds, as the AWS CLI gives them: the
    session (or the variable holding it), the region, the operation, the profile, the request,
    and Systems Manager's endpoint."""
    response = json.dumps({key: session[key] for key in ("SessionId", "TokenValue", "StreamUrl")})
    version = _plugin_version()
    added: dict[str, str] = {}
    if version is not None and version > LAST_PLUGIN_WITHOUT_VARIABLE:
        added[SESSION_VARIABLE], response = response, SESSION_VARIABLE
    argv = [
        PLUGIN,
        response,
        cloud.region,
        "StartSession",
        cloud.profile or "",
        json.dumps(request),
        endpoint,
    ]
    return argv, added


def _run_plugin(argv: list[str], added: dict[str, str]) -> int:
    """Run the plugin on this process's stdin and stdout (ssh's), passing stop signals on."""
    child = subprocess.Popen(argv, env={**os.environ, **added})

    def forward(number: int, frame: object) -> None:
        with suppress(ProcessLookupError):
            child.send_signal(number)

    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(number, forward)
    return child.wait()


def main(args: list[str] | None = None) -> int:
    options = _parser().parse_args(args)
    cloud = Cloud(
        options.region,
        options.endpoint_url,
        options.profile,
        options.role_arn,
        options.role_session_name,
    )
    ssm = cloud.client("ssm")
    request = {
        "Target": options.instance,
        "DocumentName": DOCUMENT,
        "Parameters": {"portNumber": [str(options.port)]},
    }
    try:
        session = ssm.start_session(**request)
    except (BotoCoreError, ClientError) as exc:
        print(f"ssm_proxy: no session to {options.instance}: {exc}", file=sys.stderr)
        return 255
    try:
        argv, added = plugin_argv(session, request, cloud, ssm.meta.endpoint_url)
        return _run_plugin(argv, added)
    except FileNotFoundError:
        print(f"ssm_proxy: {PLUGIN} is not installed; {INSTALL_HINT}", file=sys.stderr)
        return 255
    finally:
        with suppress(BotoCoreError, ClientError):
            ssm.terminate_session(SessionId=session["SessionId"])


if __name__ == "__main__":
    sys.exit(main())
