"""`bake iam-policy` covers every AWS action the pipeline performs: each boto3 call of a whole run
on the aws target (botocore's event hooks) and each call Packer makes (moto's request recorder)."""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bake import iam
from bake.cli import main
from bake.local import seed
from bake.records import RunOptions
from tests.integration.aws_project import make_app, write_config


def recorder(endpoint: str, verb: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/recorder/{verb}", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def recorded_actions(path: Path) -> set[str]:
    """IAM action names of the requests moto recorded: service from the signature's scope."""
    found = set()
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        scope = re.search(
            r"Credential=[^/]+/\d+/[^/]+/([^/]+)/", entry["headers"].get("Authorization", "")
        )
        if scope is None:
            continue
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode()
        action = urllib.parse.parse_qs(body).get("Action", [None])[0]
        if action is None and "X-Amz-Target" in entry["headers"]:
            action = entry["headers"]["X-Amz-Target"].split(".")[-1]
        if action:
            found.add(f"{scope.group(1)}:{action}")
    return found


@pytest.mark.packer
def test_the_policy_covers_every_action_of_a_whole_run(
    tmp_path: Path,
    moto_endpoint: str,
    cloud,
    source_ami: str,
    monkeypatch,
    capsys,
) -> None:
    config_path = write_config(
        tmp_path,
        moto_endpoint,
        encrypt_boot=True,
        kms_key_id="alias/golden",
        ami_regions=["eu-west-1"],
    )
    app = make_app(config_path)
    seed.ensure_seeded(cloud, app.config, source_ami)
    cloud.client("kms").create_alias(
        AliasName="alias/golden",
        TargetKeyId=cloud.client("kms").create_key()["KeyMetadata"]["KeyId"],
    )

    called: set[str] = set()

    def record(event_name: str, model: Any, **_: Any) -> None:
        called.add(f"{model.service_model.signing_name}:{model.name}")

    app.target.cloud.session.events.register("before-call", record)
    monkeypatch.chdir(tmp_path)
    recorder(moto_endpoint, "start-recording")
    try:
        app.run("bake-and-swap", service="demo")
        app.run("bake-and-swap", service="demo", options=RunOptions(rebuild=True, reverify=True))
        app.run("rollback", service="demo")
        app.run("build", image="base", options=RunOptions(rebuild=True))
        retired = app.run("retire", image="base", options=RunOptions(keep=1)).to_dict()["decisions"]
        app.target.cloud.client("sts").get_caller_identity()
    finally:
        recorder(moto_endpoint, "stop-recording")
    packer_and_pipeline = recorded_actions(tmp_path / "moto_recording")

    assert main(["--config", str(config_path), "iam-policy", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    allowed = iam.actions(printed)
    for statement in printed["Statement"]:
        assert all("*" not in action for action in statement["Action"]), statement["Sid"]
    assert [decision["keep"] for decision in retired] == [False, True, True]
    assert {"ec2:CreateLaunchTemplateVersion", "ec2:DeregisterImage"} <= called
    assert "ec2:CopyImage" in packer_and_pipeline
    assert called - allowed == set()
    assert packer_and_pipeline - allowed == set()


def test_the_policy_follows_the_config(tmp_path: Path) -> None:
    from bake import config as config_module

    plain = config_module.load(write_config(tmp_path, "http://127.0.0.1:1"))
    sids = [statement["Sid"] for statement in iam.policy(plain)["Statement"]]
    assert "EncryptImages" not in sids and "ReadChefPackages" not in sids
    publish = next(s for s in iam.policy(plain)["Statement"] if s["Sid"] == "PublishLatestImages")
    assert publish["Resource"] == ["arn:aws:ssm:us-east-1:*:parameter/bake/images/base/latest"]
    key = "arn:aws:kms:us-east-1:111122223333:key/a5a1f83b-835f-41e1-988f-94ac3c87f233"
    encrypted = config_module.load(
        write_config(tmp_path, "http://127.0.0.1:1", encrypt_boot=True, kms_key_id=key)
    )
    kms = next(s for s in iam.policy(encrypted)["Statement"] if s["Sid"] == "EncryptImages")
    assert kms["Resource"] == [key]


def test_leases_are_allowed_on_the_lock_table_only(tmp_path: Path) -> None:
    from bake import config as config_module

    path = write_config(tmp_path, "http://127.0.0.1:1")
    path.write_text(path.read_text().replace("[aws]\n", '[aws]\nlock_table = "bake-locks"\n'))
    statements = iam.policy(config_module.load(path))["Statement"]
    (leases,) = [s for s in statements if s["Sid"] == "HoldLeasesInTheLockTable"]
    assert leases["Resource"] == "arn:aws:dynamodb:us-east-1:*:table/bake-locks"
    assert leases["Action"] == [
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    ]
    without = iam.policy(config_module.load(write_config(tmp_path, "http://127.0.0.1:1")))
    assert "HoldLeasesInTheLockTable" not in [s["Sid"] for s in without["Statement"]]
