"""Nothing the build used to go faster stays in the image: apt and dpkg are configured as the
distribution ships them (no proxy, no unsafe I/O, no skipped index files), every kernel boots
with an initramfs that its boot menu names, made with the image's own settings, and processes
get randomised address spaces (an emulated build machine turns that off while it runs)."""

from __future__ import annotations

import os
import re

import pytest

# apt settings the patch step gives apt on its command line only, as `apt-config dump` would show
# them if they had stayed (by default it lists languages, ending in "none", but never only "none").
BUILD_ONLY_APT = (
    r"Acquire::http::Proxy",
    r"Acquire::https::Proxy",
    r'Acquire::Languages "none";',
    r"Acquire::CompressionTypes::Order",
    r"Dpkg::Use-Pty",
)


@pytest.fixture(scope="module")
def apt_config(host) -> str:
    return host.check_output("apt-config dump")


@pytest.mark.parametrize("option", BUILD_ONLY_APT)
def test_apt_has_no_build_only_setting(apt_config, option):
    assert not re.search(rf"^{re.escape(option)}", apt_config, re.MULTILINE), apt_config


def test_apt_and_dpkg_sync_their_writes(host, apt_config):
    assert "force-unsafe-io" not in apt_config
    listed = host.run("cat /etc/dpkg/dpkg.cfg /etc/dpkg/dpkg.cfg.d/* 2>/dev/null").stdout
    assert "force-unsafe-io" not in listed
    assert not host.package("eatmydata").is_installed
    assert "eatmydata" not in host.run("cat /etc/ld.so.preload 2>/dev/null").stdout


def test_no_proxy_is_configured_anywhere(host):
    for path in ("/etc/environment", "/etc/apt/apt.conf"):
        assert "proxy" not in host.run(f"cat {path} 2>/dev/null").stdout.lower()
    assert host.run("grep -ril proxy /etc/apt/apt.conf.d/").stdout.strip() == ""


def test_address_spaces_are_randomised(host):
    assert host.sysctl("kernel.randomize_va_space") == 2
    with host.sudo():
        settings = host.run(
            "cat /etc/sysctl.conf /etc/sysctl.d/*.conf /usr/lib/sysctl.d/*.conf 2>/dev/null"
        ).stdout
    assert not re.search(r"^\s*kernel\.randomize_va_space\s*=\s*[01]\s*$", settings, re.MULTILINE)
    assert "norandmaps" not in host.file("/proc/cmdline").content_string


def read_variables(text: str) -> dict[str, str]:
    """`NAME=value` lines of a shell-style configuration file, comments left out."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([A-Za-z_]+)=(.*)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip().strip("\"'")
    return found


def test_initramfs_is_configured_as_intended(host):
    """The image's initramfs settings are those its base intends ($BAKE_EXPECT_INITRAMFS names
    them where the target knows them), and updates still rebuild it."""
    conf = read_variables(host.file("/etc/initramfs-tools/initramfs.conf").content_string)
    assert conf.get("MODULES") in ("most", "dep", "netboot", "list")
    updates = read_variables(host.file("/etc/initramfs-tools/update-initramfs.conf").content_string)
    assert updates.get("update_initramfs", "yes") in ("yes", "all")
    for setting in os.environ.get("BAKE_EXPECT_INITRAMFS", "").split():
        name, _, value = setting.partition("=")
        assert conf.get(name) == value, f"{name}={conf.get(name)}, intended {value}"


def test_every_kernel_has_its_initramfs_in_the_boot_menu(host):
    kernels = host.check_output("linux-version list").split()
    assert kernels
    menu = host.file("/boot/grub/grub.cfg")
    assert menu.exists
    for kernel in kernels:
        initrd = host.file(f"/boot/initrd.img-{kernel}")
        assert initrd.is_file and initrd.size > 0, kernel
        assert f"/boot/vmlinuz-{kernel}" in menu.content_string
        assert f"/boot/initrd.img-{kernel}" in menu.content_string
    assert host.run("ls /boot/grub/*.bake-* 2>/dev/null").stdout.strip() == ""


def test_the_initramfs_of_the_running_kernel_holds_its_modules(host):
    running = host.check_output("uname -r")
    with host.sudo():
        listed = host.check_output(f"lsinitramfs /boot/initrd.img-{running}")
    assert f"usr/lib/modules/{running}/modules.dep" in listed
