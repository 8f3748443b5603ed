"""The policy `bake iam-policy` prints is enough: a whole pipeline runs as a user holding only it.

What moto enforces: while the run lasts, moto checks the signature of every request (the pipeline's
boto3 calls and Packer's alike, all made with the user's access key) and that one of the user's
statements allows its action. It does not evaluate resources or conditions: for EC2, Elastic Load
Balancing, Auto Scaling, SSM and DynamoDB it matches statements against the resource `*`, so a
scoped statement would never match, and it ignores conditions with no context to compare
(moto/core/responses.py, moto/iam/access_control.py). The user therefore holds the policy's
actions on `*` (tests/integration/policy_user.py), and a run missing one action fails with the
toolkit's one-line AccessDenied error naming it.

What the ARN check adds: every request moto recorded during the run becomes the authorizations AWS
would make (tests/integration/iam_requests.py): each resource's ARN, with the tags given on create,
the tags the resource carries (read from moto after the run: the policy's conditions on a
resource's tags are on the run tag, given at launch and never changed), the creating action, a
launch template in use, and the role a profile passes. The printed policy, with its ARNs and
conditions, must allow every one of them. That check follows AWS's documented authorization (which
resources each action is authorized on); it is not measured on AWS.
"""

from __future__ import annotations

import contextlib
import io
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bake.aws.errors import CloudError
from bake.aws.session import Cloud
from bake.aws.tags import tags_of
from bake.cli import main, report
from bake.local import seed
from bake.records import RunOptions
from tests.integration import iam_requests, policy_user
from tests.integration.aws_project import make_app, publish_source_ami, write_config
from tests.integration.moto_gaps import ResourceShares
from tests.integration.ssm_sessions import SessionManager, install_plugin
from tests.integration.test_iam_policy import recorder

REGION = "us-east-1"
COPY_REGION = "eu-west-1"
LOCK_TABLE = "goldenbake-locks"
PROFILE_NAME = "demo-web"
CONSUMER = "111122223333"  # the account the session-manager run shares its AMI and parameter with
ROLE_NAME = "demo-web-role"


def config_of_the_policy_user(folder: Path, endpoint: str, session_manager: bool = False) -> Path:
    """The whole-run project, run with the user's profile, a lock table and an instance profile
    (and with `session_manager`, through Session Manager, the AMI and its parameter shared with
    another account)."""
    path = write_config(
        folder, endpoint, encrypt_boot=True, kms_key_id="alias/golden", ami_regions=[COPY_REGION]
    )
    text = path.read_text()
    reach = (
        'ssh_interface = "session_manager"\nshare_parameter = "ram"\n' if session_manager else ""
    )
    text = text.replace(
        "[aws]\n",
        f'[aws]\nprofile = "{policy_user.PROFILE}"\nlock_table = "{LOCK_TABLE}"\n{reach}',
    )
    if session_manager:
        text = text.replace(
            "[images.base.aws]\n", f'[images.base.aws]\nami_users = ["{CONSUMER}"]\n'
        )
    text = text.replace(
        "[services.demo]\n",
        f'[services.demo]\ninstance_profile = "{PROFILE_NAME}"\ninstance_role = "{ROLE_NAME}"\n',
    )
    path.write_text(text)
    return path


def prepare_account(cloud: Cloud, app: Any) -> None:
    """What the team's own infrastructure holds before the pipeline runs, made as the admin: the
    instance profile first, which the blue environment's launch template names."""
    iam = cloud.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
    iam.create_instance_profile(InstanceProfileName=PROFILE_NAME)
    iam.add_role_to_instance_profile(InstanceProfileName=PROFILE_NAME, RoleName=ROLE_NAME)
    seed.ensure_seeded(cloud, app.config, publish_source_ami(cloud))
    kms = cloud.client("kms")
    kms.create_alias(AliasName="alias/golden", TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    cloud.client("dynamodb").create_table(
        TableName=LOCK_TABLE,
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def printed_policy(config_path: Path) -> dict[str, Any]:
    """The policy as `bake iam-policy --json` prints it."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--config", str(config_path), "iam-policy", "--json"]) == 0
    return json.loads(out.getvalue())


def reset(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def account_after(endpoint: str) -> iam_requests.Cloud:
    """The tags of every resource still known to moto, and the role of each instance profile."""
    tags: dict[str, dict[str, str]] = {}
    for region in (REGION, COPY_REGION):
        ec2 = Cloud(region, endpoint_url=endpoint).client("ec2")
        for reservation in ec2.describe_instances()["Reservations"]:
            for instance in reservation["Instances"]:
                tags[instance["InstanceId"]] = tags_of(instance)
        for image in ec2.describe_images(Owners=["self"])["Images"]:
            tags[image["ImageId"]] = tags_of(image)
        for snapshot in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]:
            tags[snapshot["SnapshotId"]] = tags_of(snapshot)
        for volume in ec2.describe_volumes()["Volumes"]:
            tags[volume["VolumeId"]] = tags_of(volume)
    profiles = Cloud(REGION, endpoint_url=endpoint).client("iam").list_instance_profiles()
    roles = {
        profile["InstanceProfileName"]: profile["Roles"][0]["RoleName"]
        for profile in profiles["InstanceProfiles"]
    }
    return iam_requests.Cloud(tags, roles)


@dataclass
class PolicyUserProject:
    folder: Path
    config_path: Path
    app: Any
    policy: dict[str, Any]


@contextlib.contextmanager
def as_the_policy_user(
    folder: Path, endpoint: str, leave_out: str | None = None, session_manager: bool = False
) -> Any:
    """A prepared account and a project whose runs are made, under enforcement, as a user holding
    the printed policy's actions (less `leave_out`); moto records every request meanwhile. With
    `session_manager`, instances are reached through Session Manager (moto patched for it, and a
    stand-in plugin on PATH)."""
    admin = Cloud(REGION, endpoint_url=endpoint)
    config_path = config_of_the_policy_user(folder, endpoint, session_manager)
    app = make_app(config_path)
    prepare_account(admin, app)
    printed = printed_policy(config_path)
    granted = policy_user.actions_only(printed)
    for statement in granted["Statement"]:
        statement["Action"] = [action for action in statement["Action"] if action != leave_out]
    key = policy_user.create_user(admin, granted)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(policy_user.write_profile(folder, key)))
        env.setenv("AWS_CONFIG_FILE", str(folder / "no-aws-config"))
        env.chdir(folder)
        if session_manager:
            SessionManager().patch(env)
            install_plugin(folder / "bin", env)
            ResourceShares(env)
        recorder(endpoint, "start-recording")
        try:
            with policy_user.enforcing(endpoint):
                yield PolicyUserProject(folder, config_path, app, printed)
        finally:
            recorder(endpoint, "stop-recording")


@dataclass
class EnforcedRun:
    policy: dict[str, Any]
    statuses: list[str]
    retired: list[tuple[str, bool]]
    requests: list[iam_requests.Request]
    account: iam_requests.Cloud
    user_key: str


@pytest.fixture(scope="module")
def enforced_run(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> EnforcedRun:
    """The whole pipeline, once, as the policy user: bake and swap, again with a rebuild, roll back,
    build, retire."""
    folder = tmp_path_factory.mktemp("policy-user")
    reset(moto_endpoint)
    with as_the_policy_user(folder, moto_endpoint) as project:
        app = project.app
        results = [
            app.run("bake-and-swap", service="demo"),
            app.run(
                "bake-and-swap", service="demo", options=RunOptions(rebuild=True, reverify=True)
            ),
            app.run("rollback", service="demo"),
            app.run("build", image="base", options=RunOptions(rebuild=True)),
        ]
        retired = app.run("retire", image="base", options=RunOptions(keep=1)).to_dict()
        user_key = app.target.cloud.session.get_credentials().access_key
    return EnforcedRun(
        policy=project.policy,
        statuses=[result.status for result in results],
        retired=[(decision["region"], decision["keep"]) for decision in retired["decisions"]],
        requests=iam_requests.read_recording(folder / "moto_recording"),
        account=account_after(moto_endpoint),
        user_key=user_key,
    )


@pytest.mark.packer
def test_a_whole_run_succeeds_as_a_user_holding_only_the_policy(enforced_run: EnforcedRun) -> None:
    assert enforced_run.statuses == ["succeeded"] * 4
    # Newest first: the unverified rebuild, the live AMI, the rollback colour's. In eu-west-1,
    # where no group runs them, the older verified copy goes too.
    assert enforced_run.retired == [
        ("us-east-1", False), ("us-east-1", True), ("us-east-1", True),
        ("eu-west-1", False), ("eu-west-1", True), ("eu-west-1", False),
    ]  # fmt: skip
    # Every request, Packer's too, was signed with the user's key, so moto checked each one.
    assert {request.access_key for request in enforced_run.requests} == {enforced_run.user_key}
    callers = {request.caller for request in enforced_run.requests}
    assert callers == {"boto3", "packer"}
    actions = {request.action for request in enforced_run.requests}
    assert {"ec2:CopyImage", "dynamodb:PutItem", "elasticloadbalancing:ModifyListener"} <= actions


@pytest.mark.packer
def test_every_resource_the_run_touched_is_within_the_policy(enforced_run: EnforcedRun) -> None:
    checks = [
        check
        for request in enforced_run.requests
        for check in iam_requests.checks(request, enforced_run.account)
    ]
    assert iam_requests.refused(enforced_run.policy, checks) == []
    scoped = {check.action for check in checks if check.resource != "*"}
    assert {
        "ec2:TerminateInstances",
        "ec2:CreateTags",
        "iam:PassRole",
        "autoscaling:CreateAutoScalingGroup",
        "ssm:GetParameter",
        "dynamodb:DeleteItem",
    } <= scoped


@pytest.mark.packer
def test_an_action_left_out_of_the_policy_fails_the_run_naming_it(
    tmp_path: Path, moto_endpoint: str, cloud: Cloud, capsys: pytest.CaptureFixture[str]
) -> None:
    left_out = "elasticloadbalancing:ModifyListener"
    with (
        as_the_policy_user(tmp_path, moto_endpoint, leave_out=left_out) as project,
        pytest.raises(CloudError) as raised,
    ):
        project.app.run("bake-and-swap", service="demo")
    assert report(raised.value, debug=False) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: AWS denied ModifyListener (AccessDenied): ")
    assert f"user/{policy_user.USER} is not authorized to perform: {left_out}" in line


@pytest.fixture(scope="module")
def session_manager_run(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> EnforcedRun:
    """A bake-and-swap as the policy user with ssh_interface = "session_manager" (Packer makes its
    temporary instance profile and opens its tunnel, verification waits for the agent), the AMI
    shared with another account and its parameter shared with it through RAM."""
    folder = tmp_path_factory.mktemp("policy-user-session-manager")
    reset(moto_endpoint)
    with as_the_policy_user(folder, moto_endpoint, session_manager=True) as project:
        result = project.app.run("bake-and-swap", service="demo")
        user_key = project.app.target.cloud.session.get_credentials().access_key
    requests = iam_requests.read_recording(folder / "moto_recording")
    account = account_after(moto_endpoint)
    account.profile_roles.update(iam_requests.profiles_made(requests))
    return EnforcedRun(project.policy, [result.status], [], requests, account, user_key)


@pytest.mark.packer
def test_a_run_through_session_manager_is_within_the_policy(
    session_manager_run: EnforcedRun,
) -> None:
    run = session_manager_run
    assert run.statuses == ["succeeded"]
    assert "ec2:AuthorizeSecurityGroupIngress" not in {r.action for r in run.requests}
    checks = [check for r in run.requests for check in iam_requests.checks(r, run.account)]
    assert iam_requests.refused(run.policy, checks) == []
    scoped = {(check.caller, check.action) for check in checks if check.resource != "*"}
    assert {
        ("boto3", "ram:CreateResourceShare"),
        ("boto3", "ssm:PutParameter"),
        ("packer", "iam:CreateRole"),
        ("packer", "iam:PutRolePolicy"),
        ("packer", "iam:AddRoleToInstanceProfile"),
        ("packer", "iam:PassRole"),
        ("packer", "ssm:StartSession"),
        ("boto3", "iam:PassRole"),
    } <= scoped
    reads = {(check.caller, check.action) for check in checks if check.resource == "*"}
    assert ("boto3", "ssm:DescribeInstanceInformation") in reads
