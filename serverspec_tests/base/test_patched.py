"""The OS patch step's promise: the newest kernel runs, and nothing from -security is pending."""

from __future__ import annotations


def test_running_kernel_is_the_newest_installed(host):
    running = host.run("uname -r").stdout.strip()
    installed = host.check_output("linux-version list | linux-version sort")
    newest = installed.splitlines()[-1].strip()
    assert running == newest, f"running {running}, newest installed {newest}"


def test_no_security_updates_pending(host):
    with host.sudo():
        update = host.run("apt-get update -q")
    assert update.rc == 0, update.stderr
    simulated = host.check_output("apt-get -s -o APT::Install-Recommends=false dist-upgrade")
    pending = [
        line
        for line in simulated.splitlines()
        if line.startswith("Inst ") and ("Debian-Security" in line or "-security" in line)
    ]
    assert pending == []


def test_release_updates_and_security_suites_are_configured(host):
    sources = host.file("/etc/apt/sources.list.d/debian.sources")
    assert sources.exists
    assert "bookworm-security" in sources.content_string
    assert "bookworm-updates" in sources.content_string
