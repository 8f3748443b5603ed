"""No inbound port: with `ssh_interface = "session_manager"` a whole bake-and-swap against moto
builds through Packer's own Session Manager tunnel (a temporary instance profile, the SSM agent in
the instance's user data) and verifies through `bake.aws.ssm_proxy`, and no security group gets an
ingress rule. moto's SSM is patched in-process for sessions and agents, and a stand-in takes the
session-manager-plugin's place (tests/integration/ssm_sessions.py); ssh itself is stood in for
behind the runner, as in the other aws-target tests."""

from __future__ import annotations

import base64
import json
import tomllib
from pathlib import Path

import boto3
import pytest

from bake import config as config_module
from bake.aws import managed_instances
from bake.aws.instances import remaining
from bake.aws.session import Cloud
from bake.errors import BakeError, InputError
from bake.local import seed
from bake.stages.render import render_image
from tests.integration import iam_requests
from tests.integration.aws_project import REPO, make_app, write_config
from tests.integration.ssm_sessions import SessionManager, install_plugin, plugin_starts
from tests.integration.test_iam_policy import recorder
from tests.request_shapes import problems

AGENT = "3.3.1142.0"
PROFILE, ROLE = "demo-web", "demo-web-role"


def session_manager_config(tmp_path: Path, endpoint: str, *, profile: bool = True) -> Path:
    """The aws-target project reached through Session Manager, its image pinning the SSM agent,
    its service's instances holding an instance profile."""
    path = write_config(tmp_path, endpoint, encrypt_boot=False)
    text = path.read_text()
    text = text.replace("[aws]\n", '[aws]\nssh_interface = "session_manager"\n')
    text = text.replace(
        'steps = ["patch", "harden", "lineage"]',
        f'steps = ["patch", "harden", {{ ssm-agent = {{ version = "{AGENT}" }} }}, "lineage"]',
    )
    if profile:
        text = text.replace(
            "[services.demo]\n", f'[services.demo]\ninstance_profile = "{PROFILE}"\n'
        )
    path.write_text(text)
    return path


def make_profile(cloud: Cloud) -> None:
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
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    iam.create_instance_profile(InstanceProfileName=PROFILE)
    iam.add_role_to_instance_profile(InstanceProfileName=PROFILE, RoleName=ROLE)


@pytest.mark.packer
def test_bake_and_swap_through_session_manager_opens_no_port(
    tmp_path: Path, moto_endpoint: str, cloud: Cloud, source_ami: str, monkeypatch
) -> None:
    sessions = SessionManager()
    sessions.patch(monkeypatch)
    plugin_log = install_plugin(tmp_path / "bin", monkeypatch)
    make_profile(cloud)
    app = make_app(session_manager_config(tmp_path, moto_endpoint))
    seed.ensure_seeded(cloud, app.config, source_ami)
    monkeypatch.chdir(tmp_path)
    recorder(moto_endpoint, "start-recording")
    try:
        result = app.run("bake-and-swap", service="demo")
    finally:
        recorder(moto_endpoint, "stop-recording")
    requests = iam_requests.read_recording(tmp_path / "moto_recording")

    assert result.status == "succeeded"
    actions = [(request.caller, request.action) for request in requests]
    assert [a for a in actions if a[1] == "ec2:AuthorizeSecurityGroupIngress"] == [], (
        "no ingress rule on any group: neither Packer's nor verification's"
    )
    # Packer: a temporary profile whose role lets the SSM agent register, and the agent in the
    # build instance's user data, pinned as the image's step pins it.
    (policy,) = [r.params for r in requests if r.action == "iam:PutRolePolicy"]
    (statement,) = json.loads(policy["PolicyDocument"])["Statement"]
    assert sorted(statement["Action"]) == sorted(managed_instances.SSM_AGENT_ACTIONS)
    assert policy["RoleName"].startswith("packer-")
    (build,) = [r for r in requests if r.action == "ec2:RunInstances" and r.caller == "packer"]
    assert build.params["IamInstanceProfile.Name"].startswith("packer-")
    user_data = base64.b64decode(build.params["UserData"]).decode()
    script = (REPO / "packer" / "scripts" / "ssm-agent.sh").read_text()
    assert user_data.startswith(f"#!/bin/sh\nBAKE_SSM_AGENT_VERSION={AGENT}\n")
    assert user_data.endswith(script.partition("\n")[2]), "the script, exactly"
    assert {"iam:DeleteInstanceProfile", "iam:DeleteRole"} <= {a for _, a in actions}
    iam = cloud.client("iam")
    assert [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]] == [
        PROFILE
    ], "Packer's temporary profile is gone"
    # Packer's tunnel, then verification's: the service's profile, its agent waited for, and ssh
    # through the proxy to the instance by its id.
    (packer_session, *_) = sessions.calls("StartSession")
    assert packer_session["DocumentName"] == "AWS-StartPortForwardingSession"
    assert plugin_starts(plugin_log)[0]["argv"][2] == "StartSession"
    (verify,) = [r for r in requests if r.action == "ec2:RunInstances" and r.caller == "boto3"]
    assert verify.params["IamInstanceProfile.Name"] == PROFILE
    assert not any(key.startswith("NetworkInterface") for key in verify.params), "no public IP"
    instance = sessions.calls("DescribeInstanceInformation")[-1]["Filters"][0]["Values"][0]
    ssh = app.runner.commands("ssh")
    assert ssh and {argv[-2] for argv in ssh} == {f"ubuntu@{instance}"}
    proxy = next(arg for argv in ssh for arg in argv if arg.startswith("ProxyCommand="))
    assert "-m bake.aws.ssm_proxy --region us-east-1" in proxy and proxy.endswith(" %h %p")
    assert f"--endpoint-url {moto_endpoint}" in proxy
    # Every Session Manager request, Packer's included, is one AWS takes.
    model = boto3.session.Session().client("ssm", region_name="us-east-1").meta.service_model
    rejected = [
        f"{action}: {problem}"
        for action, params in sessions.requests
        for problem in problems(model.operation_model(action).input_shape, params)
    ]
    assert rejected == []
    (run,) = app.history.runs()
    assert remaining(cloud, run.run_id) == {"instances": [], "security-groups": [], "key-pairs": []}


def test_an_agent_that_never_registers_is_a_clear_error_and_nothing_is_left(
    tmp_path: Path, moto_endpoint: str, cloud: Cloud, monkeypatch, register_ami
) -> None:
    from bake.records import Built

    sessions = SessionManager()
    sessions.online = False
    sessions.patch(monkeypatch)
    install_plugin(tmp_path / "bin", monkeypatch)
    make_profile(cloud)
    path = session_manager_config(tmp_path, moto_endpoint)
    path.write_text(path.read_text().replace("[aws]\n", "[aws]\nboot_timeout = 3\n"))
    app = make_app(path)
    ami = register_ami("goldenbake-base-1")
    cloud.client("ec2").create_tags(
        Resources=[ami], Tags=[{"Key": "bake:ssh-user", "Value": "admin"}]
    )
    built = Built("base", "0" * 64, ami, ami=ami)
    recorded: list[tuple[str, str]] = []

    machine = app.target.machine(
        built, app.config.images["base"], run_id="run-1",
        record=lambda kind, id: recorded.append((kind, id)), instance_profile=PROFILE,
    )  # fmt: skip
    with pytest.raises(BakeError) as raised, machine:
        pass

    instance = next(id for kind, id in recorded if kind == "instance")
    assert f"the SSM agent of {instance} did not register with Systems Manager within 3s" in (
        raised.value.message
    )
    assert len(sessions.calls("DescribeInstanceInformation")) >= 1
    assert "the ssm-agent step" in (raised.value.hint or "") and PROFILE in raised.value.hint
    assert remaining(cloud, "run-1") == {"instances": [], "security-groups": [], "key-pairs": []}
    assert app.runner.commands("ssh") == [], "no SSH before the agent is there"


def test_verification_without_a_profile_or_the_plugin_launches_nothing(
    tmp_path: Path, moto_endpoint: str, cloud: Cloud, monkeypatch, register_ami
) -> None:
    from bake.records import Built

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    app = make_app(session_manager_config(tmp_path, moto_endpoint, profile=False))
    ami = register_ami("goldenbake-base-1")
    cloud.client("ec2").create_tags(
        Resources=[ami], Tags=[{"Key": "bake:ssh-user", "Value": "admin"}]
    )
    built = Built("base", "0" * 64, ami, ami=ami)
    image = app.config.images["base"]

    without_profile = app.target.machine(built, image, run_id="run-1", record=lambda *_: None)
    with (
        pytest.raises(InputError, match="needs an instance profile") as no_profile,
        without_profile,
    ):
        pass
    assert "aws.build_instance_profile" in (no_profile.value.hint or "")
    without_plugin = app.target.machine(
        built, image, run_id="run-1", record=lambda *_: None, instance_profile=PROFILE
    )
    with (
        pytest.raises(InputError, match="session-manager-plugin is not installed") as no_plugin,
        without_plugin,
    ):
        pass
    assert "session-manager-plugin.deb" in (no_plugin.value.hint or "")
    assert cloud.client("ec2").describe_instances()["Reservations"] == []


@pytest.mark.packer
@pytest.mark.parametrize("profile", [None, "goldenbake-build"])
def test_the_rendered_template_reaches_the_instance_through_session_manager(
    tmp_path: Path, moto_endpoint: str, profile: str | None
) -> None:
    path = session_manager_config(tmp_path, moto_endpoint)
    text = path.read_text().replace('communicator = "none"', 'communicator = "ssh"')
    if profile:
        text = text.replace("[aws]\n", f'[aws]\nbuild_instance_profile = "{profile}"\n')
    path.write_text(text)
    app = make_app(path)
    ctx = app.context(image="base")

    rendered = render_image(ctx, ctx.require_image()).path.read_text()

    assert 'ssh_interface = "session_manager"' in rendered
    assert "temporary_security_group_source_cidrs" not in rendered and "ssh_cidr" not in rendered
    assert ("temporary_iam_instance_profile_policy_document" in rendered) == (profile is None)
    assert (f'iam_instance_profile = "{profile}"' in rendered) == (profile is not None)
    assert f"user_data = <<USERDATA\n#!/bin/sh\nBAKE_SSM_AGENT_VERSION={AGENT}\n" in rendered
    assert rendered.count("ssm-agent.sh") == 1, "the step's provisioner runs the same script"
    validated = [argv for argv in app.runner.calls if argv[:2] == ["packer", "validate"]]
    assert len(validated) == 1 and not any("ssh_cidr" in arg for arg in validated[0])


@pytest.mark.parametrize(
    ("aws", "message"),
    [
        (
            {"ssh_interface": "session_manager", "ssh_cidr": "203.0.113.7/32"},
            "ssh_interface session_manager opens no port",
        ),
        ({"ssh_interface": "ssm"}, "ssh_interface"),
        ({"build_instance_profile": "arn:aws:iam::1:instance-profile/x"}, "is not an IAM name"),
        ({"build_instance_role": "builder"}, "build_instance_profile, which is not given"),
    ],
)
def test_bad_session_manager_settings_are_bad_input(
    tmp_path: Path, aws: dict, message: str
) -> None:
    raw = tomllib.loads(write_config(tmp_path, "http://127.0.0.1:1").read_text())
    raw["aws"].update(aws)
    with pytest.raises(config_module.ConfigError, match=message) as raised:
        config_module.from_dict(raw, tmp_path / "bake.toml")
    assert raised.value.exit_code == 2 and "\n" not in raised.value.message
