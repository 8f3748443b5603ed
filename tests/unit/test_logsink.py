"""The local target's log collector (bake.local.logsink): fed real bytes as QEMU feeds it, one
socket that is the process's stdin, stdout and stderr, and read back from the file on the host."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bake.local import logsink

JOURNAL_LINE = b"2026-12-03T09:30:01.123456+00:00 web nginx[412]: start worker process 413\n"
FILE_LINE = (
    b"2026-12-03T09:30:02.000001+00:00 web /var/log/nginx/access.log: 10.0.2.2 - - "
    b'"GET /?token=t-0042 HTTP/1.1" 200 17\n'
)


class Connection:
    """One guest connection: the collector runs with the far end of a socket pair as its stdin,
    stdout and stderr, as libslirp starts a guestfwd command."""

    def __init__(self, directory: Path, *names: str) -> None:
        self.guest, collector_end = socket.socketpair()
        with collector_end:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bake.local.logsink", str(directory), *names],
                stdin=collector_end,
                stdout=collector_end,
                stderr=collector_end,
                cwd="/",  # QEMU's working directory is none of the module's business
            )

    def send(self, data: bytes) -> None:
        self.guest.sendall(data)

    def close(self) -> tuple[int, bytes]:
        """End the connection as the guest does; the collector's exit status and every byte it
        wrote to the connection."""
        self.guest.shutdown(socket.SHUT_WR)
        back = b""
        try:
            while chunk := self.guest.recv(65536):
                back += chunk
        except ConnectionResetError:  # it went away without reading all that was sent
            pass
        self.guest.close()
        return self.process.wait(timeout=30), back


def wait_for(path: Path, content: bytes, timeout: float = 10.0) -> bytes:
    """The file's content once it is `content` (what a reader on the host would see by then)."""
    deadline = time.monotonic() + timeout
    while True:
        found = path.read_bytes() if path.exists() else b""
        if found == content or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_each_line_is_on_the_host_as_soon_as_it_has_arrived(tmp_path: Path) -> None:
    logs = tmp_path / "logs" / "i-0aaaaaaaaaaaaaaa1"
    connection = Connection(logs)
    shipped = logs / "messages.log"

    connection.send(JOURNAL_LINE)
    assert wait_for(shipped, JOURNAL_LINE) == JOURNAL_LINE, "the connection is still open"
    connection.send(FILE_LINE[:40])
    connection.send(FILE_LINE[40:] + JOURNAL_LINE)
    assert wait_for(shipped, JOURNAL_LINE + FILE_LINE + JOURNAL_LINE) == (
        JOURNAL_LINE + FILE_LINE + JOURNAL_LINE
    )
    status, back = connection.close()

    assert (status, back) == (0, b""), "nothing reaches the guest"
    assert shipped.read_bytes() == JOURNAL_LINE + FILE_LINE + JOURNAL_LINE
    assert oct(shipped.stat().st_mode & 0o777) == oct(logsink.FILE_MODE)


def test_a_part_of_a_line_waits_for_its_end_and_a_last_line_gets_one(tmp_path: Path) -> None:
    connection = Connection(tmp_path)
    shipped = tmp_path / "messages.log"

    connection.send(JOURNAL_LINE + b"the last line, cut")
    assert wait_for(shipped, JOURNAL_LINE) == JOURNAL_LINE
    time.sleep(0.2)
    assert shipped.read_bytes() == JOURNAL_LINE, "no half line is written while more may come"
    status, back = connection.close()

    assert (status, back) == (0, b"")
    assert shipped.read_bytes() == JOURNAL_LINE + b"the last line, cut\n"


def test_two_connections_of_one_machine_append_whole_lines_to_one_file(tmp_path: Path) -> None:
    shipped = tmp_path / "messages.log"
    shipped.write_bytes(b"from an earlier connection\n")
    first, second = Connection(tmp_path), Connection(tmp_path)

    first.send(b"first: one\nfirst: two, begun ")
    second.send(b"second: one\n")
    assert wait_for(shipped, b"") != b""
    first.send(b"and ended\n")
    second.send(b"second: two")
    statuses = [first.close()[0], second.close()[0]]

    assert statuses == [0, 0]
    lines = shipped.read_bytes().splitlines()
    assert lines[0] == b"from an earlier connection", "a collector appends, never truncates"
    assert sorted(lines[1:]) == sorted(
        [b"first: one", b"first: two, begun and ended", b"second: one", b"second: two"]
    )
    assert lines.index(b"first: one") < lines.index(b"first: two, begun and ended")


def test_a_stopped_collector_keeps_what_it_had_received(tmp_path: Path) -> None:
    """QEMU's process group is sent SIGTERM when a machine does not power off in time."""
    connection = Connection(tmp_path)
    shipped = tmp_path / "messages.log"
    connection.send(JOURNAL_LINE + b"half a line")
    assert wait_for(shipped, JOURNAL_LINE) == JOURNAL_LINE

    connection.process.send_signal(signal.SIGTERM)

    assert connection.process.wait(timeout=30) == 0
    assert shipped.read_bytes() == JOURNAL_LINE + b"half a line\n"
    connection.guest.close()


def test_a_line_that_never_ends_is_written_in_parts(tmp_path: Path) -> None:
    read, write = os.pipe()
    target = os.open(tmp_path / "messages.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    endless = b"x" * (logsink.MAX_PENDING + logsink.READ_SIZE)
    pid = os.fork()
    if pid == 0:  # the guest's side of a pipe, as big as the collector may hold and more
        os.close(read)
        os.write(write, endless)
        os._exit(0)
    os.close(write)

    written = logsink.collect(read, target)

    os.waitpid(pid, 0)
    os.close(read)
    os.close(target)
    parts = (tmp_path / "messages.log").read_bytes().split(b"\n")
    assert written == len(endless) + 2
    assert parts[-1] == b"" and len(parts) == 3
    assert len(parts[0]) >= logsink.MAX_PENDING and parts[0] + parts[1] == endless


def test_the_name_of_the_file_can_be_given(tmp_path: Path) -> None:
    connection = Connection(tmp_path, "verify-web-messages.log")
    connection.send(JOURNAL_LINE)
    assert connection.close() == (0, b"")
    assert (tmp_path / "verify-web-messages.log").read_bytes() == JOURNAL_LINE
    assert not (tmp_path / "messages.log").exists()


def test_a_folder_that_cannot_be_made_ends_the_connection_and_tells_only_a_terminal(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    connection = Connection(tmp_path / "a-file" / "logs")
    connection.send(JOURNAL_LINE)
    assert connection.close() == (1, b""), "under libslirp the complaint would reach the guest"

    shown = subprocess.run(
        [sys.executable, "-m", "bake.local.logsink", str(tmp_path / "a-file" / "logs")],
        input=JOURNAL_LINE,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert shown.returncode == 1 and shown.stdout == b""
    assert shown.stderr.decode().startswith("bake.local.logsink: cannot open ")


# the command QEMU runs


def test_the_command_runs_this_module_on_the_absolute_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert logsink.command(Path("logs/i-1"), python="/usr/bin/python3") == (
        f"/usr/bin/python3 -m bake.local.logsink {tmp_path}/logs/i-1"
    )
    assert logsink.command(tmp_path, "verify-web-messages.log", python="/py") == (
        f"/py -m bake.local.logsink {tmp_path} verify-web-messages.log"
    )
    assert logsink.command(tmp_path).startswith(f"{sys.executable} -m bake.local.logsink ")


@pytest.mark.parametrize(
    ("directory", "name", "python"),
    [
        ("/state/a,b/logs", None, "/usr/bin/python3"),
        ("/state/a b/logs", None, "/usr/bin/python3"),
        ("/state/it's/logs", None, "/usr/bin/python3"),
        ("/state/logs", "two words.log", "/usr/bin/python3"),
        ("/state/logs", None, "/opt/my python/bin/python3"),
    ],
)
def test_a_command_qemu_would_split_is_refused(directory: str, name, python: str) -> None:
    with pytest.raises(ValueError, match="comma, whitespace"):
        logsink.command(directory, name, python=python)


@pytest.mark.parametrize("name", ["", "../messages.log", "sub/messages.log", ".."])
def test_a_name_that_is_not_a_file_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="is not a file name"):
        logsink.command("/state/logs", name)


def test_the_module_imports_nothing_it_does_not_need(tmp_path: Path) -> None:
    """It starts per connection: only the standard library's smallest modules."""
    report = tmp_path / "modules.txt"
    wrapper = (
        "import runpy, sys\n"
        "before = set(sys.modules)\n"
        f"sys.argv = ['logsink', {str(tmp_path / 'logs')!r}]\n"
        "try:\n"
        "    runpy.run_module('bake.local.logsink', run_name='__main__', alter_sys=True)\n"
        "except SystemExit:\n"
        "    pass\n"
        f"open({str(report)!r}, 'w').write(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", wrapper], input=JOURNAL_LINE, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "logs" / "messages.log").read_bytes() == JOURNAL_LINE
    imported = set(report.read_text(encoding="utf-8").split())
    assert "bake.local" in imported, "the wrapper saw the module's imports"
    assert imported <= {"bake", "bake.local", "signal"}, "no other module of bake's, no json, re"
