"""The `ship-logs` step on a fresh machine of the image: rsyslog runs with the step's configuration
and reads the journal itself, nothing the build queued came along, and a line logged now leaves
the machine: on the local target it reaches the file the host's collector writes for this
verification (`.bake/logs/RUN_ID/verify-IMAGE-messages.log`); on aws rsyslog writes it where the
CloudWatch agent, running, reads it."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import pytest

CONFIG = "/etc/rsyslog.d/99-bake-ship-logs.conf"
JOURNAL_FILE = "/var/log/bake/journal.log"
WAIT = 60.0


@pytest.fixture(scope="module")
def config(host) -> str:
    with host.sudo():
        return host.file(CONFIG).content_string


def test_rsyslog_runs_with_the_steps_configuration(host, config):
    rsyslog = host.service("rsyslog")
    assert rsyslog.is_enabled and rsyslog.is_running
    assert 'module(load="imjournal"' in config
    with host.sudo():
        assert host.run("rsyslogd -N1").rc == 0
    forwarding = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "ForwardToSyslog=no" in forwarding, "journald does not feed a second, lossy copy"


def test_nothing_a_shipper_kept_during_the_build_came_along(host):
    """Its queue and its places in the journal and files are this boot's, none older (seal)."""
    booted = host.check_output("awk '/^btime/ { print $2 }' /proc/stat")
    with host.sudo():
        older = host.check_output(
            f"find /var/spool/rsyslog /var/log/bake -type f ! -newermt @{booted} 2>/dev/null"
            " || true"
        )
    assert older == ""


def a_line_logged_now(host) -> str:
    token = f"bake-verify-{uuid.uuid4().hex}"
    host.run(f"logger -t bake-verify {token}")
    return token


def collector_file(image: str) -> Path | None:
    """The newest file a verification machine of `image` ships to: this one's."""
    state_dir = os.environ.get("BAKE_STATE_DIR")
    if not state_dir:
        return None
    found = sorted(
        Path(state_dir, "logs").glob(f"*/verify-{image}-messages.log"),
        key=lambda path: path.stat().st_mtime,
    )
    return found[-1] if found else None


def test_a_line_logged_now_leaves_the_machine(host, config, expected):
    token = a_line_logged_now(host)
    deadline = time.monotonic() + WAIT
    if 'type="omfwd"' in config:  # the local target: to the host's collector
        while True:
            shipped = collector_file(expected.image)
            if shipped is not None and token in shipped.read_text(errors="replace"):
                break
            assert time.monotonic() < deadline, f"{token} did not reach {shipped}"
            time.sleep(1)
        line = next(line for line in shipped.read_text().splitlines() if token in line)
        assert re.search(rf" bake-verify(\[\d+\])?: {token}$", line), line
        return
    assert host.service("amazon-cloudwatch-agent").is_running
    while True:  # aws: into the file the CloudWatch agent sends on
        with host.sudo():
            if token in host.run(f"cat {JOURNAL_FILE}").stdout:
                break
        assert time.monotonic() < deadline, f"{token} did not reach {JOURNAL_FILE}"
        time.sleep(1)
