"""The pull-deploy step's promise: at every boot the release the user data names is installed
before the health check's server starts; a machine whose user data names none (as a verification
machine's) has nothing to install and starts as usual."""

from __future__ import annotations

import json


def test_the_release_unit_ran_at_boot_and_found_nothing_to_install(host):
    assert host.service("bake-release").is_enabled
    assert host.check_output("systemctl show -p ActiveState --value bake-release") == "active"
    record = json.loads(host.file("/run/bake/release.json").content_string)
    assert record["release"] is None
    assert record["checked"]


def test_the_agent_and_the_application_folder_are_in_place(host):
    agent = host.file("/usr/local/lib/bake/pull-release")
    assert agent.is_file and agent.mode == 0o755 and agent.user == "root"
    assert host.file("/srv/app/releases").is_directory
    assert not host.file("/srv/app/current").exists, "no release was named"


def test_the_application_runs_as_a_system_user_without_a_shell(host):
    app = host.user("app")
    assert app.exists
    assert app.shell == "/usr/sbin/nologin"
    assert app.uid < 1000


def test_the_health_checks_server_waits_for_the_release(host):
    shown = host.check_output("systemctl show -p Requires,After --value nginx")
    assert "bake-release.service" in shown
    assert host.service("bake-app").is_enabled
    assert host.check_output("systemctl show -p ActiveState --value bake-app") == "inactive", (
        "no release, no bin/start: the condition keeps it from starting"
    )
