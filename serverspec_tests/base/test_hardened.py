"""The hardening step's promise: sshd takes keys only, and the kernel's network settings are
strict."""

from __future__ import annotations

import pytest

SSHD_SETTINGS = {
    "passwordauthentication": "no",
    "kbdinteractiveauthentication": "no",
    "permitemptypasswords": "no",
    "permitrootlogin": "without-password",
    "x11forwarding": "no",
    "allowagentforwarding": "no",
    "allowtcpforwarding": "no",
    "maxauthtries": "3",
}

SYSCTL_SETTINGS = {
    "net.ipv4.conf.all.accept_redirects": 0,
    "net.ipv4.conf.all.send_redirects": 0,
    "net.ipv4.conf.all.accept_source_route": 0,
    "net.ipv4.tcp_syncookies": 1,
    "kernel.kptr_restrict": 2,
    "kernel.dmesg_restrict": 1,
    "fs.protected_symlinks": 1,
    "fs.suid_dumpable": 0,
}


@pytest.fixture(scope="module")
def sshd_effective(host):
    with host.sudo():
        output = host.check_output("sshd -T")
    return dict(line.split(" ", 1) for line in output.splitlines() if " " in line)


@pytest.mark.parametrize(("key", "value"), sorted(SSHD_SETTINGS.items()))
def test_sshd_setting(sshd_effective, key, value):
    assert sshd_effective.get(key) == value


def test_sshd_is_running_and_enabled(host):
    ssh = host.service("ssh")
    assert ssh.is_running
    assert ssh.is_enabled


@pytest.mark.parametrize(("key", "value"), sorted(SYSCTL_SETTINGS.items()))
def test_sysctl(host, key, value):
    assert host.sysctl(key) == value


def test_host_keys_are_this_machines_own(host):
    """The image ships no SSH host keys: each machine makes its own on first boot."""
    key = host.file("/etc/ssh/ssh_host_ed25519_key")
    assert key.exists
    assert key.mode == 0o600
    lineage = host.file("/etc/bake/lineage.json")
    assert key.mtime > lineage.mtime


def test_machine_id_is_set(host):
    assert len(host.file("/etc/machine-id").content_string.strip()) == 32
