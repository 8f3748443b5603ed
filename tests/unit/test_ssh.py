from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bake import ssh
from bake.errors import BakeError
from bake.ssh import SshHost
from tests.unit.fakes import FakeRunner


def _host(tmp_path: Path) -> SshHost:
    return SshHost("127.0.0.1", 2222, "root", tmp_path / "id_ed25519", tmp_path / "ssh_config")


def _keygen_writes_files(argv: list[str]) -> None:
    private = Path(argv[argv.index("-f") + 1])
    private.write_text("PRIVATE")
    Path(f"{private}.pub").write_text("ssh-ed25519 AAAA goldenbake")


def test_ensure_keypair_creates_an_ed25519_pair_once(tmp_path: Path) -> None:
    runner = FakeRunner().on("ssh-keygen", effect=_keygen_writes_files)
    directory = tmp_path / "ssh"

    first = ssh.ensure_keypair(runner, directory)
    second = ssh.ensure_keypair(runner, directory)

    assert first == second == (directory / "id_ed25519", directory / "id_ed25519.pub")
    assert runner.commands("ssh-keygen") == [
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "goldenbake",
         "-f", str(directory / "id_ed25519")]
    ]  # fmt: skip


def test_ssh_config_disables_prompts_and_host_key_checks(tmp_path: Path) -> None:
    path = ssh.write_ssh_config(tmp_path)

    lines = {line.strip() for line in path.read_text().splitlines()}
    assert "StrictHostKeyChecking no" in lines
    assert "UserKnownHostsFile /dev/null" in lines
    assert "BatchMode yes" in lines
    assert "IdentitiesOnly yes" in lines, "an agent's other keys are not offered"
    assert "ConnectTimeout 5" in lines
    assert "ServerAliveInterval 10" in lines
    assert "LogLevel ERROR" in lines


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder whose path leaves room for a socket's name (pytest's own are too deep)."""
    with tempfile.TemporaryDirectory(prefix="bk", dir="/tmp") as name:
        yield Path(name)


def test_commands_to_a_machine_share_one_connection(short_dir: Path) -> None:
    path = ssh.write_ssh_config(short_dir)

    lines = {line.strip() for line in path.read_text().splitlines()}
    assert "ControlMaster auto" in lines
    assert "ControlPersist 30s" in lines
    sockets = short_dir.resolve() / "connections"
    assert f"ControlPath {sockets}/%C" in lines, "an absolute path, whatever the cwd"
    assert sockets.is_dir() and sockets.stat().st_mode & 0o777 == 0o700


def test_a_socket_folder_too_deep_for_a_socket_name_moves_to_the_temporary_folder(
    tmp_path: Path, short_dir: Path
) -> None:
    deep = tmp_path / ("d" * 60)

    sockets = ssh.control_directory(deep)

    assert sockets.parent == Path(tempfile.gettempdir())
    assert len(str(sockets)) + 1 + 40 + 17 <= 107, "ssh binds '%C.RANDOM' first"
    assert ssh.control_directory(short_dir) == short_dir.resolve() / "connections"


def test_the_shared_connection_is_closed_on_purpose(tmp_path: Path) -> None:
    runner = FakeRunner().on("ssh", returncode=255)  # none open: nothing to close, no error
    host = _host(tmp_path)

    ssh.close_shared(runner, host)

    assert runner.calls == [
        ["ssh", "-O", "exit", "-F", str(host.config_file), "-i", str(host.identity_file),
         "-p", "2222", "root@127.0.0.1", ""]
    ]  # fmt: skip


def test_run_builds_the_ssh_command_line(tmp_path: Path) -> None:
    runner = FakeRunner().on("ssh", stdout="6.1.0\n")
    host = _host(tmp_path)

    result = ssh.run(runner, host, "uname -r")

    assert result.stdout == "6.1.0\n"
    assert runner.calls == [
        ["ssh", "-F", str(host.config_file), "-i", str(host.identity_file), "-p", "2222",
         "root@127.0.0.1", "uname -r"]
    ]  # fmt: skip


def test_wait_for_ssh_polls_until_the_machine_answers(tmp_path: Path) -> None:
    runner = FakeRunner().on("ssh", returncodes=[255, 255, 0])

    waited = ssh.wait_for_ssh(runner, _host(tmp_path), timeout=30, interval=0)

    assert len(runner.commands("ssh")) == 3
    assert runner.calls[-1][-1] == "true"
    assert waited >= 0


def test_wait_for_ssh_fails_when_the_machine_died(tmp_path: Path) -> None:
    runner = FakeRunner().on("ssh", returncode=255, stderr="Connection refused")
    alive = iter([True, False])

    with pytest.raises(BakeError, match="stopped before SSH answered"):
        ssh.wait_for_ssh(runner, _host(tmp_path), timeout=30, alive=lambda: next(alive), interval=0)
    assert len(runner.commands("ssh")) == 1


def test_wait_for_ssh_gives_up_after_the_timeout(tmp_path: Path) -> None:
    runner = FakeRunner().on("ssh", returncode=255, stderr="Connection refused")

    with pytest.raises(BakeError, match=r"did not answer within \d+s: Connection refused"):
        ssh.wait_for_ssh(runner, _host(tmp_path), timeout=0.05, interval=0.01)
    assert 1 <= len(runner.commands("ssh")) < 50
