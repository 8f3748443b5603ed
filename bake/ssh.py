"""SSH to the machines the toolkit boots: a key pair of its own, a client config, and a wait.

Every call goes through the Runner; the same key and config serve testinfra's ssh backend.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bake.errors import BakeError
from bake.runner import Completed, Runner

KEY_NAME = "id_ed25519"
# A shared connection outlives its last command by this long, and its socket is named by the hash
# of the local host, remote host, port and user (%C, 40 characters). A Unix socket's name is at
# most 107 bytes, and ssh first binds the socket under a name 17 characters longer (".RANDOM").
CONTROL_PERSIST = "30s"
CONTROL_NAME = "%C"
CONTROL_NAME_LENGTH = 40 + 17
SOCKET_PATH_MAX = 107
CONFIG_NAME = "ssh_config"

SSH_OPTIONS = {
    "StrictHostKeyChecking": "no",
    "UserKnownHostsFile": "/dev/null",
    "LogLevel": "ERROR",
    "ConnectTimeout": "5",
    "BatchMode": "yes",
    # Only the machine's own key: an agent holding more keys would use up sshd's MaxAuthTries.
    "IdentitiesOnly": "yes",
    "ServerAliveInterval": "10",
}


@dataclass(frozen=True)
class SshHost:
    """A machine reachable over SSH, as testinfra and the runner's ssh calls see it."""

    host: str
    port: int
    user: str
    identity_file: Path
    config_file: Path
    # How ssh reaches `host` when it cannot connect to it (an instance id through Session
    # Manager); `config_file` names it too, for testinfra's ssh backend.
    proxy_command: str | None = None

    def testinfra_url(self) -> str:
        return (
            f"ssh://{self.user}@{self.host}:{self.port}"
            f"?ssh_identity_file={self.identity_file}&ssh_config={self.config_file}"
        )


def ensure_keypair(runner: Runner, directory: Path) -> tuple[Path, Path]:
    """The toolkit's ed25519 key pair in `directory`, created on first use; (private, public)."""
    private = directory / KEY_NAME
    public = directory / f"{KEY_NAME}.pub"
    if private.is_file() and public.is_file():
        return private, public
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    private.unlink(missing_ok=True)
    public.unlink(missing_ok=True)
    runner.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "goldenbake", "-f", str(private)]
    )
    return private, public


def control_directory(directory: Path) -> Path:
    """Where the sockets of shared connections live: beside the config, unless that path is too
    long for a socket's name (then a private folder under the system's temporary directory)."""
    sockets = directory.resolve() / "connections"
    if len(str(sockets)) + 1 + CONTROL_NAME_LENGTH > SOCKET_PATH_MAX:
        sockets = Path(tempfile.gettempdir()) / f"goldenbake-ssh-{os.getuid()}"
    sockets.mkdir(mode=0o700, parents=True, exist_ok=True)
    return sockets


def write_ssh_config(directory: Path, proxy_command: str | None = None) -> Path:
    """An ssh_config for throwaway machines: no host key checks, no prompts, quick failures, and
    one connection per machine that every command shares (each command a channel of it, not a
    key exchange of its own: the suites run dozens); with `proxy_command`, for the machines
    reached through it (write it beside that machine's key)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_NAME
    options = {
        **SSH_OPTIONS,
        "ControlMaster": "auto",
        "ControlPersist": CONTROL_PERSIST,
        "ControlPath": str(control_directory(directory) / CONTROL_NAME),
        **({"ProxyCommand": proxy_command} if proxy_command else {}),
    }
    body = "Host *\n" + "".join(f"    {key} {value}\n" for key, value in options.items())
    if not path.is_file() or path.read_text(encoding="utf-8") != body:
        path.write_text(body, encoding="utf-8")
    return path


def ssh_argv(host: SshHost, command: str) -> list[str]:
    """The ssh command line that runs `command` on `host`."""
    proxy = ["-o", f"ProxyCommand={host.proxy_command}"] if host.proxy_command else []
    return [
        "ssh",
        "-F",
        str(host.config_file),
        *proxy,
        "-i",
        str(host.identity_file),
        "-p",
        str(host.port),
        f"{host.user}@{host.host}",
        command,
    ]


def close_shared(runner: Runner, host: SshHost) -> None:
    """End the connection the commands to `host` share (and a proxy behind it), now rather than
    when it has been idle for CONTROL_PERSIST; nothing to do when there is none."""
    runner.run(["ssh", "-O", "exit", *ssh_argv(host, "")[1:]], check=False, timeout=15)


def run(
    runner: Runner,
    host: SshHost,
    command: str,
    *,
    check: bool = True,
    timeout: float | None = None,
) -> Completed:
    """Run a shell command on `host` and capture its output."""
    return runner.run(ssh_argv(host, command), check=check, timeout=timeout)


def wait_for_ssh(
    runner: Runner,
    host: SshHost,
    *,
    timeout: float,
    alive: Callable[[], bool] | None = None,
    interval: float = 2,
) -> float:
    """Poll `host` with `ssh true` every `interval` seconds until it answers; seconds waited.

    Fails early when `alive()` says the machine is gone, and after `timeout` seconds otherwise.
    """
    started = time.monotonic()
    deadline = started + timeout
    last_error = ""
    while True:
        if alive is not None and not alive():
            raise BakeError(
                f"the machine behind {host.host}:{host.port} stopped before SSH answered"
                f" (after {time.monotonic() - started:.0f}s)",
                hint="see its console log",
            )
        attempt_started = time.monotonic()
        try:
            result = run(runner, host, "true", check=False, timeout=15)
        except BakeError as exc:
            last_error = exc.message
        else:
            if result.ok:
                return time.monotonic() - started
            last_error = _last_line(result.stderr or result.stdout)
        now = time.monotonic()
        if now >= deadline:
            detail = f": {last_error}" if last_error else ""
            raise BakeError(
                f"SSH on {host.host}:{host.port} did not answer within {now - started:.0f}s"
                f"{detail}",
                hint="see the machine's console log",
            )
        time.sleep(max(0.0, min(interval - (now - attempt_started), deadline - now)))


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
