"""The web role's app: an unprivileged user with no login shell runs it under a hardened systemd
unit, listening on the loopback interface only, so nginx is its one way in."""

from __future__ import annotations

import pytest

APP_USER = "golden-web"
APP_UNIT = "golden-web-app"

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
}


def test_app_user_is_a_system_user_without_login_shell(host):
    user = host.user(APP_USER)
    assert user.exists
    assert user.shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
    assert user.uid < 1000
    assert user.group == APP_USER


def test_app_unit_is_active_and_enabled(host):
    app = host.service(APP_UNIT)
    assert app.is_running
    assert app.is_enabled


def test_app_runs_as_the_app_user(host):
    assert host.check_output(f"systemctl show -p User --value {APP_UNIT}") == APP_USER
    main_pid = host.check_output(f"systemctl show -p MainPID --value {APP_UNIT}")
    assert int(host.check_output(f"ps -o uid= -p {main_pid}")) == host.user(APP_USER).uid


@pytest.mark.parametrize(("setting", "value"), sorted(HARDENING.items()))
def test_app_unit_is_hardened(host, setting, value):
    assert host.check_output(f"systemctl show -p {setting} --value {APP_UNIT}") == value


def test_app_listens_on_loopback_port_8080_only(host):
    on_8080 = [socket for socket in host.socket.get_listening_sockets() if socket.endswith(":8080")]
    assert on_8080 == ["tcp://127.0.0.1:8080"]


def test_app_files_are_not_writable_by_the_app(host):
    root = host.file("/srv/golden-web")
    assert root.is_directory
    assert root.user == "root"
    assert not root.mode & 0o022
