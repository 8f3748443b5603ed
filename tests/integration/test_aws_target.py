"""The aws target against an in-process moto server: the amazon-ebs template rendered for both
Packer generations, a real `packer build` of it against moto, the throwaway verification instance,
and a whole bake-and-swap. Only ssh and the suites' pytest are stood in for, behind the runner."""

from __future__ import annotations

import ipaddress
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bake import config as config_module
from bake.app import App
from bake.aws import images
from bake.aws.instances import remaining
from bake.console import Console
from bake.errors import InputError, StageFailed
from bake.local import seed
from bake.records import RunOptions, Traffic, VerifiedAmi
from bake.stages.build import inputs_digest
from bake.stages.render import render_image
from tests.integration.aws_project import REPO, make_app, toml_value, write_config
from tests.integration.moto_gaps import ImageDeprecation
from tests.unit.fakes import FakeRunner


def test_the_example_aws_config_loads_and_names_both_images() -> None:
    loaded = config_module.load(REPO / "examples" / "aws.bake.toml")
    assert loaded.target == "aws"
    assert (
        loaded.images["base"].base_for("aws").value == "/aws/service/debian/release/12/latest/amd64"
    )
    assert loaded.images["web"].base_for("aws").describe() == "image:base"
    assert [step.kind for step in loaded.images["web"].steps].count("chef") == 1
    assert "web" in {service.image for service in loaded.services.values()}


@pytest.mark.packer
def test_render_for_packer_1_6_validates_for_real(
    tmp_path: Path, moto_endpoint, source_ami
) -> None:
    app = make_app(
        write_config(
            tmp_path,
            moto_endpoint,
            encrypt_boot=True,
            kms_key_id="alias/golden",
            ami_regions=["eu-west-1"],
            ami_users=["111122223333"],
        )
    )
    ctx = app.context(image="base")
    rendered = render_image(ctx, ctx.require_image())
    text = rendered.path.read_text()
    assert "required_plugins" not in text and "metadata_options" not in text
    assert 'kms_key_id   = "alias/golden"' in text
    assert 'ami_regions  = ["eu-west-1"]' in text
    assert 'ami_users    = ["111122223333"]' in text
    assert 'snapshot_users = ["111122223333"]' in text, "they can copy it, too"
    assert 'communicator = "none"' in text
    assert "provisioner" not in text, "no communicator: nothing can be provisioned"
    validate = [argv for argv in app.runner.calls if argv[:2] == ["packer", "validate"]]
    assert len(validate) == 1


def test_render_for_packer_1_9_requires_the_plugin_and_imdsv2(
    tmp_path: Path, moto_endpoint
) -> None:
    config_path = write_config(
        tmp_path,
        moto_endpoint,
        encrypt_boot=False,
        ami_org_arns=["arn:aws:organizations::111122223333:organization/o-abcdefghij"],
    )
    text = config_path.read_text().replace('communicator = "none"', 'communicator = "ssh"')
    config_path.write_text(text)
    app = make_app(config_path)
    app.runner.real = frozenset()
    app.runner.on("packer", stdout="Packer v1.9.4\n")
    ctx = app.context(image="base")
    rendered = render_image(ctx, ctx.require_image())
    text = rendered.path.read_text()
    assert 'source  = "github.com/hashicorp/amazon"' in text
    assert 'version = "= 1.8.0"' in text, "one exact plugin version"
    assert "device_name           = var.root_device" in text
    assert 'http_tokens                 = "required"' in text
    assert 'imds_support = "v2.0"' in text
    assert "ami_org_arns" in text
    assert "temporary_security_group_source_cidrs = [var.ssh_cidr]" in text
    assert "ssh_clear_authorized_keys = true" in text
    assert text.count('provisioner "shell"') == 6, "4 steps and the two package lists"
    assert text.count('provisioner "file"') == 2, "the package lists, downloaded"
    assert "sudo -E sh -eu" in text
    assert [argv[1] for argv in app.runner.commands("packer")] == ["version", "init", "validate"]


def test_the_pinned_amazon_plugin_is_part_of_the_build_digest(
    tmp_path: Path, moto_endpoint
) -> None:
    digests = {}
    config_path = write_config(tmp_path, moto_endpoint)
    written = config_path.read_text()
    for plugin in ("1.8.0", "1.7.1", "1.8.0"):
        config_path.write_text(
            written.replace(
                'communicator = "none"\n', f'communicator = "none"\namazon_plugin = "{plugin}"\n'
            )
        )
        app = make_app(config_path)
        app.runner.real = frozenset()
        app.runner.on("packer", stdout="Packer v1.9.4\n")
        ctx = app.context(image="base")
        rendered = render_image(ctx, ctx.require_image())
        assert f'version = "= {plugin}"' in rendered.text
        digest = inputs_digest(rendered, "aws")
        assert digests.setdefault(plugin, digest) == digest, "the same plugin, the same build"
    assert digests["1.8.0"] != digests["1.7.1"], "another plugin is another build"


def test_org_sharing_needs_packer_1_7(tmp_path: Path, moto_endpoint) -> None:
    app = make_app(
        write_config(
            tmp_path,
            moto_endpoint,
            encrypt_boot=False,
            ami_org_arns=["arn:aws:organizations::111122223333:organization/o-abcdefghij"],
        )
    )
    app.runner.real = frozenset()
    app.runner.on("packer", stdout="Packer v1.6.6\n")
    ctx = app.context(image="base")
    with pytest.raises(InputError, match="ami_org_arns needs Packer 1.7 or newer"):
        render_image(ctx, ctx.require_image())


@pytest.mark.parametrize(
    ("aws_table", "message"),
    [
        ({"encrypt_boot": True, "kms_key_id": "golden"}, "'golden' is not a KMS key"),
        ({"encrypt_boot": False, "kms_key_id": "alias/golden"}, "encrypt_boot is not true"),
        ({"ami_regions": ["Europe"]}, "'Europe' is not an AWS region"),
        ({"ami_users": ["12345"]}, "'12345' is not an AWS account id"),
        (
            {"encrypt_boot": True, "region_kms_key_ids": {"eu-west-1": "alias/x"}},
            "region_kms_key_ids names eu-west-1, which is not in ami_regions",
        ),
    ],
)
def test_bad_aws_settings_are_bad_input(tmp_path: Path, aws_table, message) -> None:
    raw = tomllib.loads(write_config(tmp_path, "http://127.0.0.1:1").read_text())
    raw["images"]["base"]["aws"] = aws_table
    with pytest.raises(config_module.ConfigError, match=message):
        config_module.from_dict(raw, tmp_path / "bake.toml")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("amazon_plugin", ">= 1.2.1", r"'>= 1.2.1' is not one exact version \(for example 1.8.0\)"),
        (
            "role_arn",
            "goldenbake-fleet",
            r"'goldenbake-fleet' is not an IAM role ARN \(for example arn:aws:",
        ),
        (
            "consumer_roles",
            {"1111": "arn:aws:iam::111122223333:role/x"},
            "'1111' is not an AWS account id",
        ),
        (
            "consumer_roles",
            {"111122223333": "arn:aws:iam::444455556666:role/x"},
            "the role for account 111122223333 is in another account",
        ),
        ("consumer_roles", {"111122223333": "consumer"}, "'consumer' is not an IAM role ARN"),
    ],
)
def test_bad_aws_target_settings_are_bad_input(tmp_path: Path, key, value, message) -> None:
    raw = tomllib.loads(write_config(tmp_path, "http://127.0.0.1:1").read_text())
    raw["aws"][key] = value
    with pytest.raises(config_module.ConfigError, match=f"aws.{key}: {message}"):
        config_module.from_dict(raw, tmp_path / "bake.toml")


@pytest.mark.packer
def test_bake_and_swap_on_aws_against_moto(
    tmp_path: Path, moto_endpoint, cloud, source_ami
) -> None:
    config_path = write_config(
        tmp_path, moto_endpoint, encrypt_boot=True, tags={"team": "platform"}
    )
    app = make_app(config_path)
    seed.ensure_seeded(cloud, app.config, source_ami)
    result = app.run("bake-and-swap", service="demo")

    ami = result.records.need(VerifiedAmi, "test").ami
    manifest_amis = images.describe(cloud, ami)
    assert manifest_amis is not None and manifest_amis["Name"].startswith("goldenbake-base-")
    tags = images.tags_of(manifest_amis)
    assert tags["bake:verified"] == "true"
    assert tags["bake:source-ami"] == source_ami
    assert tags["bake:kernel"] == "6.1.0-56-cloud-amd64"
    assert tags["team"] == "platform"
    assert images.published(cloud, "base") == ami
    (build,) = [argv for argv in app.runner.calls if argv[:2] == ["packer", "build"]]
    root_device = images.describe(cloud, source_ami)["RootDeviceName"]
    assert f"root_device={root_device}" in build, "the source AMI's own root device is sized"
    assert "ssh_username=ubuntu" in build, "the source is Canonical's: Ubuntu's own user"
    assert tags["bake:ssh-user"] == "ubuntu", "the images built on it log in as ubuntu too"
    assert {argv[-2].split("@")[0] for argv in app.runner.commands("ssh")} == {"ubuntu"}
    assert result.records.need(Traffic, "test").live_color == "green"
    (run,) = app.history.runs()
    assert run.status == "succeeded"
    kinds = {resource.kind for resource in run.resources}
    assert {"ami", "key-pair", "security-group", "instance"} <= kinds
    assert remaining(cloud, run.run_id) == {
        "instances": [],
        "security-groups": [],
        "key-pairs": [],
    }


@pytest.mark.packer
def test_a_failed_verification_on_aws_cleans_up_and_tags_false(
    tmp_path: Path, moto_endpoint, cloud, source_ami
) -> None:
    app = make_app(write_config(tmp_path, moto_endpoint), failures=1)
    seed.ensure_seeded(cloud, app.config, source_ami)
    with pytest.raises(StageFailed, match="1 failed"):
        app.run("bake-and-swap", service="demo")
    (run,) = app.history.runs()
    assert remaining(cloud, run.run_id) == {
        "instances": [],
        "security-groups": [],
        "key-pairs": [],
    }
    assert images.tags_of(images.describe(cloud, run.ami))["bake:verified"] == "false"
    assert images.published(cloud, "base") is None


@pytest.mark.packer
def test_ctrl_c_while_waiting_for_ssh_removes_the_instance_key_and_group(
    tmp_path: Path, moto_endpoint, cloud, source_ami
) -> None:
    app = make_app(write_config(tmp_path, moto_endpoint))
    app.run("build", image="base")
    app.runner.on("ssh", raises=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        app.run("verify", image="base")
    run = app.history.runs()[0]
    assert run.command == "verify" and run.status == "cancelled"
    created = {resource.kind for resource in run.resources}
    assert created == {"key-pair", "security-group", "instance"}
    assert remaining(cloud, run.run_id) == {
        "instances": [],
        "security-groups": [],
        "key-pairs": [],
    }


def test_sharing_an_encrypted_ami_needs_its_own_key(tmp_path: Path) -> None:
    raw = tomllib.loads(write_config(tmp_path, "http://127.0.0.1:1").read_text())
    raw["images"]["base"]["aws"] = {"encrypt_boot": True, "ami_users": ["111122223333"]}
    with pytest.raises(
        config_module.ConfigError, match="sharing an encrypted AMI needs kms_key_id"
    ):
        config_module.from_dict(raw, tmp_path / "bake.toml")


@pytest.mark.packer
def test_the_example_renders_and_validates_both_images(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BAKE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "example")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example")
    app = App(
        REPO / "examples" / "aws.bake.toml",
        console=Console(quiet=True),
        runner=FakeRunner(real=frozenset({"packer", "ruby"})),
    )
    for name in ("base", "web"):
        ctx = app.context(image=name)
        text = render_image(ctx, ctx.require_image()).path.read_text()
        assert "encrypt_boot = true" in text and 'kms_key_id   = "alias/golden-images"' in text
    assert 'region_kms_key_ids = { "eu-central-1" = ' in (
        app.state.rendered("base", "aws").read_text()
    )
    web = app.state.rendered("web", "aws").read_text()
    assert "chef-install.sh" in web and "chef-converge.sh" in web
    assert "ssh_clear_authorized_keys = true" in web, "Packer's key leaves the image"
    assert 'ssh_interface = "session_manager"' in web, "no inbound port"
    assert "associate_public_ip_address" not in web and "temporary_security_group" not in web
    assert 'iam_instance_profile = "goldenbake-build"' in web, "the fleet stack's profile"
    assert "ssm-agent.sh" in app.state.rendered("base", "aws").read_text(), "base carries the agent"
    assert sorted(
        p.name for p in (app.state.rendered("web", "aws").parent / "chef" / "cookbooks").iterdir()
    ) == ["golden_base", "golden_web"]
    validated = [argv for argv in app.runner.calls if argv[:2] == ["packer", "validate"]]
    assert len(validated) == 2


@pytest.mark.parametrize(
    ("base", "message"),
    [
        ("ssm:/goldenbake-test/missing", "SSM parameter /goldenbake-test/missing does not exist"),
        ({"filter": {"name": "no-such-image-*", "owners": ["self"]}}, "no AMI matches the filter"),
        ("ami-0123456789abcdef0", "AMI ami-0123456789abcdef0 does not exist"),
        # the parent has no verified AMI, so it is baked first: its own base is missing
        ("image:parent", "images.parent.base: AMI ami-0123456789abcdef0 does not exist"),
    ],
)
def test_a_base_that_resolves_to_nothing_is_bad_input_and_launches_nothing(
    tmp_path: Path, moto_endpoint, cloud, base, message
) -> None:
    raw = tomllib.loads(write_config(tmp_path, moto_endpoint).read_text())
    raw["images"]["base"]["base"] = base
    raw["images"]["parent"] = {"base": "ami-0123456789abcdef0", "steps": [], "verify": ["suites"]}
    config_path = tmp_path / "bake.toml"
    config_path.write_text(toml_document(raw))
    app = make_app(config_path)
    app.runner.real = frozenset()
    app.runner.on("packer", stdout="Packer v1.6.6\n")
    with pytest.raises(InputError, match=message) as raised:
        app.run("build", image="base")
    assert raised.value.exit_code == 2
    assert not [argv for argv in app.runner.calls if argv[:2] == ["packer", "build"]]
    reservations = cloud.client("ec2").describe_instances()["Reservations"]
    assert reservations == []


def toml_document(raw: dict[str, Any]) -> str:
    """The test's own config as TOML: top-level keys, then one table per image and service."""
    text = "".join(
        f"{key} = {toml_value(value)}\n"
        for key, value in raw.items()
        if not isinstance(value, dict)
    )
    for section in ("aws", "images", "services"):
        if section == "aws":
            text += "\n[aws]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in raw["aws"].items())
            continue
        for name, body in raw.get(section, {}).items():
            text += f"\n[{section}.{name}]\n" + "".join(
                f"{k} = {toml_value(v)}\n" for k, v in body.items()
            )
    return text


@pytest.mark.packer
@pytest.mark.parametrize("interface", ["public_ip", "private_ip"])
def test_verification_in_a_subnet_reaches_the_instance_as_ssh_interface_says(
    tmp_path: Path, moto_endpoint, cloud, source_ami, interface: str
) -> None:
    ec2 = cloud.client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
    config_path = write_config(tmp_path, moto_endpoint)
    config_path.write_text(
        config_path.read_text().replace(
            'communicator = "none"\n',
            f'communicator = "none"\nsubnet_id = "{subnet_id}"\nssh_interface = "{interface}"\n',
        )
    )
    app = make_app(config_path)
    rendered = render_image(app.context(image="base"), app.config.images["base"]).path.read_text()
    assert ("associate_public_ip_address = true" in rendered) == (interface == "public_ip")
    app.run("build", image="base")
    sent: dict[str, dict[str, Any]] = {}
    app.target.cloud.client("ec2").meta.events.register(
        "before-parameter-build", lambda params, model, **_: sent.setdefault(model.name, params)
    )

    app.run("verify", image="base")

    (ingress,) = sent["AuthorizeSecurityGroupIngress"]["IpPermissions"]
    (address,) = {argv[-2].split("@")[1] for argv in app.runner.commands("ssh")}
    in_subnet = ipaddress.ip_address(address) in ipaddress.ip_network("10.7.1.0/24")
    launched = sent["RunInstances"]
    if interface == "public_ip":
        (interface_request,) = launched["NetworkInterfaces"]
        assert interface_request["SubnetId"] == subnet_id
        assert interface_request["AssociatePublicIpAddress"] is True, "asked, not assumed"
        assert "SecurityGroupIds" not in launched
        assert not in_subnet, "SSH goes to the instance's public address"
        assert ingress["IpRanges"][0]["CidrIp"] == "127.0.0.1/32"
    else:
        assert launched["SubnetId"] == subnet_id and "NetworkInterfaces" not in launched
        assert in_subnet, "SSH goes to the instance's private address"
        assert ingress["IpRanges"][0]["CidrIp"] == "10.7.0.0/16", "the VPC, not a public address"


def aws_config(tmp_path: Path, **settings: str) -> Path:
    """The test project on real AWS (no endpoint), with these [aws] settings."""
    path = write_config(tmp_path, "unused")
    lines = "".join(f'{key} = "{value}"\n' for key, value in settings.items())
    path.write_text(
        path.read_text().replace('endpoint_url = "unused"\n', lines)
        .replace('communicator = "none"', 'communicator = "ssh"')
    )  # fmt: skip
    return path


def test_packer_resolves_credentials_itself_so_that_they_refresh(
    tmp_path: Path, monkeypatch, moto_endpoint
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example")
    (tmp_path / "profile").mkdir()
    profiled = make_app(aws_config(tmp_path / "profile", profile="ci")).target.packer_environment()
    (tmp_path / "chain").mkdir()
    chain = make_app(aws_config(tmp_path / "chain")).target.packer_environment()
    endpoint = make_app(write_config(tmp_path, moto_endpoint)).target.packer_environment()

    assert profiled["AWS_PROFILE"] == "ci" and profiled["AWS_SDK_LOAD_CONFIG"] == "1"
    for environment in (profiled, chain):
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(
            environment
        ), "nothing frozen: Packer reads the same sources boto3 does, and renews from them"
    assert chain["AWS_REGION"] == "us-east-1"
    assert endpoint["AWS_ACCESS_KEY_ID"] == "goldenbake", "an endpoint's own credentials"
    assert endpoint["AWS_SESSION_TOKEN"] == "", "no stale token of the runner's goes along"


def test_a_role_is_assumed_by_packer_itself_and_validates_for_real(tmp_path: Path) -> None:
    role = "arn:aws:iam::123456789012:role/goldenbake-fleet"
    app = make_app(aws_config(tmp_path, role_arn=role, role_session_name="nightly"))
    ctx = app.context(image="base")

    text = render_image(ctx, ctx.require_image()).path.read_text()

    assert f'role_arn     = "{role}"' in text and 'session_name = "nightly"' in text
    validated = [argv for argv in app.runner.calls if argv[:2] == ["packer", "validate"]]
    assert len(validated) == 1, "the installed Packer takes the assume_role block"


@pytest.mark.packer
def test_copies_are_tagged_published_in_their_region_and_retired_with_their_image(
    tmp_path: Path, moto_endpoint, cloud, source_ami
) -> None:
    app = make_app(write_config(tmp_path, moto_endpoint, ami_regions=["eu-west-1"]))
    europe = cloud.in_region("eu-west-1")

    app.run("bake", image="base")

    home, copy = images.published(cloud, "base"), images.published(europe, "base")
    assert home and copy and copy != home, "each region's parameter names its own AMI"
    assert images.describe(cloud, copy) is None and images.describe(europe, copy) is not None
    home_tags = images.tags_of(images.describe(cloud, home))
    copy_tags = images.tags_of(images.describe(europe, copy))
    assert copy_tags["bake:verified"] == "true", "a copy is as verified as its source"
    lineage = ("bake:digest", "bake:kernel", "bake:source-ami", "bake:suites", "bake:run-id")
    assert {key: copy_tags[key] for key in lineage} == {key: home_tags[key] for key in lineage}

    app.run("bake", image="base", options=RunOptions(rebuild=True, reverify=True))
    newer_copy = images.published(europe, "base")
    assert newer_copy not in (None, copy)
    retired = app.run("retire", image="base", options=RunOptions(keep=1)).to_dict()["decisions"]

    assert {(d["region"], d["ami"]) for d in retired if not d["keep"]} == {
        ("us-east-1", home), ("eu-west-1", copy),
    }  # fmt: skip
    assert images.describe(europe, copy) is None and images.describe(cloud, home) is None
    assert images.describe(europe, newer_copy) is not None


CONSUMER = "111122223333"  # looked into through its role
UNSEEN = "444455556666"  # given the AMI, with no role to look into it


@pytest.mark.packer
def test_a_shared_ami_is_published_in_the_consumer_account_and_retired_when_no_account_runs_it(
    tmp_path: Path, moto_endpoint, cloud, source_ami, monkeypatch
) -> None:
    lifecycle = ImageDeprecation(monkeypatch)
    role = f"arn:aws:iam::{CONSUMER}:role/goldenbake-consumer"
    config_path = write_config(tmp_path, moto_endpoint, encrypt_boot=False)
    config_path.write_text(
        config_path.read_text().replace(
            "[images.base.aws]\n",
            f'[images.base.aws]\nami_users = ["{CONSUMER}", "{UNSEEN}"]\n',
        ).replace(
            'communicator = "none"\n',
            f'communicator = "none"\nconsumer_roles = {{ "{CONSUMER}" = "{role}" }}\n',
        )
    )  # fmt: skip
    app = make_app(config_path)
    app.run("bake", image="base")
    first = images.published(cloud, "base")
    app.run("bake", image="base", options=RunOptions(rebuild=True, reverify=True))
    second = images.published(cloud, "base")
    consumer = cloud.as_role(role)
    assert consumer.client("sts").get_caller_identity()["Account"] == CONSUMER
    assert images.published(consumer, "base") == second, "written into the consumer's account"
    # A group in the consumer's account still launches the first AMI.
    ec2 = consumer.client("ec2")
    template = ec2.create_launch_template(
        LaunchTemplateName="consumer-app", LaunchTemplateData={"ImageId": first}
    )["LaunchTemplate"]
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    consumer.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName="consumer-app", MinSize=0, MaxSize=1, DesiredCapacity=0,
        LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"]},
        VPCZoneIdentifier=subnet,
    )  # fmt: skip

    def retire_first() -> dict[str, Any]:
        decisions = app.run("retire", image="base", options=RunOptions(keep=1)).to_dict()
        return next(d for d in decisions["decisions"] if d["ami"] == first)

    used = retire_first()
    assert used["keep"] and f"in use in account {CONSUMER}: consumer-app" in used["reason"]
    assert images.describe(cloud, first)["State"] == "available"

    consumer.client("autoscaling").delete_auto_scaling_group(AutoScalingGroupName="consumer-app")
    assert lifecycle.calls == [], "an AMI a consumer's group launches is left alone"
    before = datetime.now(UTC)
    disabled = retire_first()
    assert disabled["keep"] and disabled["disable"] and UNSEEN in disabled["reason"]
    described = images.describe(cloud, first)
    assert described["State"] == "disabled", "no new launches while the grace period runs"
    assert "bake:disabled-at" in images.tags_of(described)
    (deprecated, disabling) = lifecycle.calls
    assert (deprecated[:2], disabling[:2]) == (
        ("EnableImageDeprecation", first), ("DisableImage", first),
    ), "deprecated first, then disabled"  # fmt: skip
    deprecate_at = datetime.fromisoformat(deprecated[2].replace("Z", "+00:00"))
    deprecate_at = deprecate_at if deprecate_at.tzinfo else deprecate_at.replace(tzinfo=UTC)
    assert before < deprecate_at <= datetime.now(UTC) + timedelta(minutes=1), "not in the past"

    waiting = retire_first()
    assert waiting["keep"] and not waiting["disable"] and "deregistered from" in waiting["reason"]
    assert len(lifecycle.calls) == 2, "disabled once"

    eight_days_ago = (datetime.now(UTC) - timedelta(days=8)).isoformat(timespec="seconds")
    cloud.client("ec2").create_tags(
        Resources=[first], Tags=[{"Key": "bake:disabled-at", "Value": eight_days_ago}]
    )
    gone = retire_first()
    assert not gone["keep"] and "longer than 7 days" in gone["reason"]
    assert images.describe(cloud, first) is None
    assert images.describe(cloud, second)["State"] == "available"
