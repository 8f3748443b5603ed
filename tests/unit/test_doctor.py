"""`bake doctor` says what is missing and how to install it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bake.cli import main

CONFIG = """
[images.base]
base = "debian:bookworm"
steps = ["patch"]
verify = ["suites"]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose PATH holds a fake packer and the real ssh tools, and nothing else."""
    (tmp_path / "suites").mkdir()
    (tmp_path / "bake.toml").write_text(CONFIG)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    packer = bin_dir / "packer"
    packer.write_text("#!/bin/sh\necho 'Packer v1.6.6'\n")
    packer.chmod(0o755)
    for tool in ("ssh", "ssh-keygen"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("BAKE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_missing_tools_are_named_with_the_package_that_brings_them(project: Path, capsys) -> None:
    code = main(["doctor", "--json"])
    checks = {check["name"]: check for check in json.loads(capsys.readouterr().out)}
    assert code == 1
    assert checks["packer"]["ok"] and checks["packer"]["detail"] == "1.6.6"
    assert checks["ssh"]["ok"]
    assert not checks["qemu-system-x86_64"]["ok"]
    assert checks["qemu-system-x86_64"]["fix"] == "apt-get install -y qemu-system-x86"
    assert checks["mmdebstrap"]["fix"] == "apt-get install -y mmdebstrap"
    assert checks["haproxy"]["fix"] == "apt-get install -y haproxy"
    assert checks["local cloud"]["ok"] and "not running" in checks["local cloud"]["detail"]
    assert "accelerator" not in checks, "no QEMU, so no probe"


def test_a_project_with_chef_steps_needs_ruby(project: Path, capsys) -> None:
    chef = '{ chef = { run_list = ["recipe[x]"], client = { method = "preinstalled" } } }'
    (project / "bake.toml").write_text(CONFIG.replace('steps = ["patch"]', f"steps = [{chef}]"))
    main(["doctor", "--json"])
    checks = {check["name"]: check for check in json.loads(capsys.readouterr().out)}
    assert checks["ruby"]["fix"] == "apt-get install -y ruby"


def test_the_human_report_names_each_fix_and_exits_1(project: Path, capsys) -> None:
    code = main(["doctor"])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert code == 1
    assert lines[0].startswith("ok  packer: 1.6.6")
    assert "MISSING qemu-system-x86_64: not found  -> apt-get install -y qemu-system-x86" in lines
    assert captured.err.startswith("error: 5 required check(s) failed: qemu-system-x86_64, ")
    assert "mmdebstrap" in captured.err


def test_everything_present_exits_0(project: Path, capsys) -> None:
    bin_dir = project / "bin"
    for tool in ("qemu-img", "mmdebstrap", "mke2fs", "haproxy"):
        fake = bin_dir / tool
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
    qemu = bin_dir / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\nexit 1\n")
    qemu.chmod(0o755)
    (project / "bake.toml").write_text(CONFIG + '\n[local]\naccelerator = "tcg"\n')
    code = main(["doctor"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "MISSING" not in out


def test_a_project_with_services_is_told_what_its_machines_need(project: Path, capsys) -> None:
    service = '\n[services.demo]\nimage = "base"\ncapacity = 2\n'
    (project / "bake.toml").write_text(CONFIG + service)
    main(["doctor", "--json"])
    checks = {check["name"]: check for check in json.loads(capsys.readouterr().out)}
    assert checks["memory"]["ok"], checks["memory"]
    assert "for 4 service machines and a build machine" in checks["memory"]["detail"]

    huge = service.replace("capacity = 2", "capacity = 5000")
    (project / "bake.toml").write_text(CONFIG + huge)
    main(["doctor", "--json"])
    checks = {check["name"]: check for check in json.loads(capsys.readouterr().out)}
    assert not checks["memory"]["ok"]
    assert checks["memory"]["detail"].startswith("the local machines need ")
    assert "machine_memory" in checks["memory"]["fix"]
