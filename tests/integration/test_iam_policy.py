"""`bake iam-policy` covers every AWS action the pipeline performs: each boto3 call of a whole run
on the aws target (botocore's event hooks) and each call Packer makes (moto's request recorder).
The same run's boto3 requests are checked as AWS checks them, moto being more lenient."""

from __future__ import annotations

import base64
import copy
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
from tests.integration import iam_requests
from tests.integration.aws_project import make_app, write_config
from tests.request_shapes import problems


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
    sent: list[tuple[Any, dict[str, Any]]] = []

    def keep(params: dict[str, Any], model: Any, **_: Any) -> None:
        sent.append((model, copy.deepcopy(params)))

    app.target.cloud.session.events.register("before-parameter-build", keep)
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
    assert [(decision["region"], decision["keep"]) for decision in retired] == [
        ("us-east-1", False), ("us-east-1", True), ("us-east-1", True),
        ("eu-west-1", False), ("eu-west-1", True), ("eu-west-1", False),
    ]  # fmt: skip
    assert {"ec2:CreateLaunchTemplateVersion", "ec2:DeregisterImage"} <= called
    assert "ec2:CopyImage" in packer_and_pipeline
    assert called - allowed == set()
    assert packer_and_pipeline - allowed == set()
    rejected = [
        f"{model.name}: {problem}"
        for model, params in sent
        for problem in problems(model.input_shape, params)
    ]
    assert rejected == [], "every request of the run is one AWS takes"
    assert {model.name for model, _ in sent} >= {
        "CreateLaunchTemplateVersion", "CreateAutoScalingGroup", "CreateTargetGroup",
        "ModifyListener", "RunInstances", "CreateTags", "PutParameter",
    }  # fmt: skip


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


def scoped_project(tmp_path: Path) -> dict[str, Any]:
    """The policy of the whole-run project with an instance profile whose role is named."""
    from bake import config as config_module

    path = write_config(tmp_path, "http://127.0.0.1:1", ami_regions=["eu-west-1"])
    path.write_text(
        path.read_text().replace(
            "[services.demo]\n",
            '[services.demo]\ninstance_profile = "demo-web"\ninstance_role = "demo-web-role"\n',
        )
    )
    return iam.policy(config_module.load(path))


def test_only_reads_are_allowed_on_every_resource(tmp_path: Path) -> None:
    for statement in scoped_project(tmp_path)["Statement"]:
        assert all("*" not in action for action in statement["Action"]), statement["Sid"]
        if statement["Resource"] == "*":
            assert all(iam_requests.READS.match(a.split(":")[1]) for a in statement["Action"])
            assert iam_requests.SCOPED_READS.isdisjoint(statement["Action"]), statement["Sid"]


EC2 = "arn:aws:ec2:us-east-1:123456789012"
ELB = "arn:aws:elasticloadbalancing:us-east-1:123456789012"
ASG = "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName"
RUN = {"aws:ResourceTag/bake:run-id": ("20261127T070000Z-abc123",)}
PASSED_TO_EC2 = {"iam:PassedToService": ("ec2.amazonaws.com",)}


@pytest.mark.parametrize(
    ("action", "resource", "context", "allowed"),
    [
        ("ec2:TerminateInstances", f"{EC2}:instance/i-1", RUN, True),
        ("ec2:TerminateInstances", f"{EC2}:instance/i-1", {}, False),
        ("ec2:RunInstances", f"{EC2}:instance/*", {}, False),
        ("ec2:RunInstances", f"{EC2}:key-pair/someone-elses", {}, False),
        ("ec2:DeleteKeyPair", f"{EC2}:key-pair/packer_6b09", {}, True),
        ("ec2:DeleteKeyPair", f"{EC2}:key-pair/production", {}, False),
        ("ec2:CreateTags", f"{EC2}:instance/i-1", {}, False),
        (
            "ec2:CreateTags",
            "arn:aws:ec2:eu-west-1::image/ami-1",
            {"aws:RequestTag/bake:image": ("base",)},
            True,
        ),
        (
            "ec2:CreateTags",
            "arn:aws:ec2:eu-west-1::image/ami-1",
            {"aws:RequestTag/bake:image": ("other",)},
            False,
        ),
        ("ec2:DeregisterImage", "arn:aws:ec2:ap-south-1::image/ami-1", {}, False),
        ("ec2:EnableImageDeprecation", "arn:aws:ec2:eu-west-1::image/ami-1", {}, True),
        ("ec2:DisableImage", "arn:aws:ec2:us-east-1::image/ami-1", {}, True),
        ("elasticloadbalancing:ModifyListener", f"{ELB}:listener/app/demo/1/2", {}, True),
        ("elasticloadbalancing:ModifyListener", f"{ELB}:listener/app/shop/1/2", {}, False),
        (
            "elasticloadbalancing:ModifyListener",
            "arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/demo/1/2",
            {},
            False,
        ),
        ("elasticloadbalancing:ModifyRule", f"{ELB}:listener-rule/app/demo/1/2/3", {}, True),
        ("elasticloadbalancing:CreateTargetGroup", f"{ELB}:targetgroup/demo-green/*", {}, True),
        ("elasticloadbalancing:CreateTargetGroup", f"{ELB}:targetgroup/shop-green/*", {}, False),
        (
            "elasticloadbalancing:AddTags",
            f"{ELB}:loadbalancer/app/demo/1",
            {"aws:TagKeys": ("bake:rollout:demo",)},
            True,
        ),
        (
            "elasticloadbalancing:AddTags",
            f"{ELB}:loadbalancer/app/demo/1",
            {"aws:TagKeys": ("owner",)},
            False,
        ),
        ("autoscaling:UpdateAutoScalingGroup", f"{ASG}/demo-blue", {}, True),
        ("autoscaling:DeleteAutoScalingGroup", f"{ASG}/shop-blue", {}, False),
        (
            "ssm:GetParameter",
            "arn:aws:ssm:us-east-1::parameter/goldenbake-test/debian-12",
            {},
            True,
        ),
        ("ssm:GetParameter", "arn:aws:ssm:us-east-1:1:parameter/bake/images/web/latest", {}, True),
        ("ssm:GetParameter", "arn:aws:ssm:us-east-1:1:parameter/prod/db-password", {}, False),
        ("ssm:PutParameter", "arn:aws:ssm:us-east-1:1:parameter/bake/images/web/latest", {}, False),
        ("iam:PassRole", "arn:aws:iam::1:role/demo-web-role", PASSED_TO_EC2, True),
        ("iam:PassRole", "arn:aws:iam::1:role/demo-web", PASSED_TO_EC2, False),
        (
            "iam:PassRole",
            "arn:aws:iam::1:role/demo-web-role",
            {"iam:PassedToService": ("lambda.amazonaws.com",)},
            False,
        ),
    ],
)
def test_changes_are_allowed_only_on_what_the_config_names(
    tmp_path: Path, action: str, resource: str, context: dict, allowed: bool
) -> None:
    check = iam_requests.Check("test", action, resource, context)
    assert iam_requests.allows(scoped_project(tmp_path), check) is allowed


def test_without_instance_profiles_no_role_can_be_passed(tmp_path: Path) -> None:
    from bake import config as config_module

    plain = iam.policy(config_module.load(write_config(tmp_path, "http://127.0.0.1:1")))
    assert "iam:PassRole" not in iam.actions(plain)


def session_manager_policy(tmp_path: Path, **aws: str) -> dict[str, Any]:
    from bake import config as config_module

    path = write_config(tmp_path, "http://127.0.0.1:1")
    lines = "".join(f'{key} = "{value}"\n' for key, value in aws.items())
    path.write_text(
        path.read_text().replace("[aws]\n", f'[aws]\nssh_interface = "session_manager"\n{lines}')
    )
    return iam.policy(config_module.load(path))


SSM = "arn:aws:ssm:us-east-1"
TAGGED = {"ssm:resourceTag/bake:run-id": ("20261127T070000Z-abc123",)}


@pytest.mark.parametrize(
    ("action", "resource", "context", "allowed"),
    [
        ("ssm:StartSession", f"{EC2}:instance/i-1", TAGGED, True),
        ("ssm:StartSession", f"{EC2}:instance/i-1", {}, False),
        ("ssm:StartSession", f"{SSM}::document/AWS-StartSSHSession", {}, True),
        ("ssm:StartSession", f"{SSM}::document/AWS-StartPortForwardingSession", {}, True),
        ("ssm:StartSession", f"{SSM}::document/AWS-StartInteractiveCommand", {}, False),
        ("ssm:TerminateSession", f"{SSM}:123456789012:session/bake-runner-0a1b", {}, True),
        ("iam:CreateRole", "arn:aws:iam::1:role/packer-6b09f", {}, True),
        ("iam:CreateRole", "arn:aws:iam::1:role/administrator", {}, False),
        ("iam:AddRoleToInstanceProfile", "arn:aws:iam::1:instance-profile/packer-6b0", {}, True),
        ("iam:PassRole", "arn:aws:iam::1:role/packer-6b09f", {}, True),
        ("iam:PassRole", "arn:aws:iam::1:role/administrator", PASSED_TO_EC2, False),
    ],
)
def test_sessions_reach_only_build_and_verification_instances(
    tmp_path: Path, action: str, resource: str, context: dict, allowed: bool
) -> None:
    check = iam_requests.Check("test", action, resource, context)
    assert iam_requests.allows(session_manager_policy(tmp_path), check) is allowed


def test_a_named_build_profile_grants_no_role_making(tmp_path: Path) -> None:
    named = session_manager_policy(tmp_path, build_instance_profile="goldenbake-build")
    allowed = iam.actions(named)

    assert not {"iam:CreateRole", "iam:PutRolePolicy", "iam:CreateInstanceProfile"} & allowed
    passed = iam_requests.Check(
        "test", "iam:PassRole", "arn:aws:iam::1:role/goldenbake-build", PASSED_TO_EC2
    )
    read = iam_requests.Check(
        "test", "iam:GetInstanceProfile", "arn:aws:iam::1:instance-profile/goldenbake-build"
    )
    temporary = iam_requests.Check("test", "iam:PassRole", "arn:aws:iam::1:role/packer-6b09f")
    assert iam_requests.allows(named, passed) and iam_requests.allows(named, read)
    assert not iam_requests.allows(named, temporary)
    from bake import config as config_module

    plain = iam.policy(config_module.load(write_config(tmp_path, "http://127.0.0.1:1")))
    assert not {"ssm:StartSession", "ssm:TerminateSession"} & iam.actions(plain)
