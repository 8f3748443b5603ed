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


AWS_CONFIG = """
target = "aws"

[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"

[images.base]
base = "ami-0123456789abcdef0"
steps = ["patch"]
verify = ["suites"]

[images.base.aws]
kms_key_id = "alias/golden"
ami_users = ["111122223333"]

[services.demo]
image = "base"
capacity = 2
"""

ROOT_ONLY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Enable IAM policies",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
}


def aws_checks(project: Path, capsys) -> tuple[int, dict[str, dict]]:
    code = main(["doctor", "--json"])
    printed = capsys.readouterr()
    assert printed.out, printed.err
    return code, {check["name"]: check for check in json.loads(printed.out)}


def test_a_key_that_the_autoscaling_role_and_sharing_accounts_cannot_use_is_named_with_the_fix(
    project: Path, capsys, cloud, moto_endpoint: str
) -> None:
    (project / "bake.toml").write_text(AWS_CONFIG.format(endpoint=moto_endpoint))
    kms = cloud.client("kms")
    key_id = kms.create_key(Policy=json.dumps(ROOT_ONLY))["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/golden", TargetKeyId=key_id)

    code, checks = aws_checks(project, capsys)

    check = checks["kms key alias/golden"]
    assert code == 1 and not check["ok"] and check["required"]
    assert "AWSServiceRoleForAutoScaling" in check["detail"]
    assert "111122223333" in check["detail"]
    statement = json.loads(check["fix"].split("add to its key policy: ", 1)[1])
    assert statement["Principal"]["AWS"] == [
        "arn:aws:iam::111122223333:root",
        "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/"
        "AWSServiceRoleForAutoScaling",
    ]

    # The statement it prints is the whole fix.
    fixed = {**ROOT_ONLY, "Statement": [*ROOT_ONLY["Statement"], statement]}
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(fixed))
    code, checks = aws_checks(project, capsys)
    assert checks["kms key alias/golden"]["ok"], checks["kms key alias/golden"]
    assert checks["kms key alias/golden"]["detail"].startswith(
        f"arn:aws:kms:us-east-1:123456789012:key/{key_id}"
    )


def test_a_key_whose_policy_names_the_account_is_not_enough_for_the_autoscaling_role(
    project: Path, capsys, cloud, moto_endpoint: str
) -> None:
    (project / "bake.toml").write_text(
        AWS_CONFIG.format(endpoint=moto_endpoint).replace('ami_users = ["111122223333"]\n', "")
    )
    everyone_in_the_account = {
        **ROOT_ONLY,
        "Statement": [{**ROOT_ONLY["Statement"][0], "Principal": {"AWS": "123456789012"}}],
    }
    kms = cloud.client("kms")
    key_id = kms.create_key(Policy=json.dumps(everyone_in_the_account))["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/golden", TargetKeyId=key_id)

    _, checks = aws_checks(project, capsys)

    check = checks["kms key alias/golden"]
    assert not check["ok"], "the service-linked role holds no KMS permission of its own"
    assert "111122223333" not in check["detail"], "nobody is given the AMI"


def test_a_key_that_does_not_exist_is_named(project: Path, capsys, cloud, moto_endpoint) -> None:
    (project / "bake.toml").write_text(AWS_CONFIG.format(endpoint=moto_endpoint))

    code, checks = aws_checks(project, capsys)

    assert code == 1 and not checks["kms key alias/golden"]["ok"]
    assert "NotFoundException" in checks["kms key alias/golden"]["detail"]


def test_packer_older_than_1_7_is_told_what_it_lacks_on_the_aws_target(
    project: Path, capsys, cloud, moto_endpoint: str
) -> None:
    (project / "bake.toml").write_text(
        AWS_CONFIG.format(endpoint=moto_endpoint)
        .replace('kms_key_id = "alias/golden"\n', "")
        .replace('ami_users = ["111122223333"]\n', "")
    )

    code, checks = aws_checks(project, capsys)

    features = checks["packer features"]
    assert not features["ok"] and not features["required"], "a warning: 1.6 still builds"
    assert "IMDSv2 on the build instance" in features["detail"]
    assert "amazon plugin pinned" in features["detail"]
    assert "1.7" in features["fix"] and "apt.releases.hashicorp.com" in features["fix"]
    assert code == 0, checks

    (project / "bin" / "packer").write_text("#!/bin/sh\necho 'Packer v1.11.2'\n")
    _, checks = aws_checks(project, capsys)
    assert checks["packer features"]["ok"]


def test_session_manager_needs_the_plugin_and_says_where_aws_ships_it(
    project: Path, capsys, cloud, moto_endpoint: str
) -> None:
    (project / "bake.toml").write_text(
        AWS_CONFIG.format(endpoint=moto_endpoint)
        .replace("[aws]\n", '[aws]\nssh_interface = "session_manager"\n')
        .replace('kms_key_id = "alias/golden"\n', "")
        .replace('ami_users = ["111122223333"]\n', "")
    )

    code, checks = aws_checks(project, capsys)

    plugin = checks["session-manager-plugin"]
    assert code == 1 and not plugin["ok"] and plugin["required"]
    assert (
        "https://s3.amazonaws.com/session-manager-downloads/plugin/latest/ubuntu_64bit/"
        "session-manager-plugin.deb" in plugin["fix"]
    )
    installed = project / "bin" / "session-manager-plugin"
    installed.write_text("#!/bin/sh\necho 1.2.707.0\n")
    installed.chmod(0o755)
    code, checks = aws_checks(project, capsys)
    assert checks["session-manager-plugin"]["ok"] and code == 0, checks
