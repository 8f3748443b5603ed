"""Who build and verification log in as: [aws] ssh_username when given, otherwise the source AMI's
own user, read against moto: a layered image's parent carries it in its bake:ssh-user tag, a
distribution's AMI is known by the account that publishes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bake.aws import images
from bake.errors import InputError
from tests.integration.aws_project import CANONICAL, make_app, write_config

AMAZON = "137112412989"
WINDOWS_PUBLISHER = "801119661308"  # Amazon's Windows AMIs: no SSH user to tell


def stock_ami(cloud, owner: str) -> str:
    """One of moto's stock AMIs of `owner` with an EBS root."""
    found = cloud.client("ec2").describe_images(
        Owners=[owner], Filters=[{"Name": "root-device-type", "Values": ["ebs"]}]
    )["Images"]
    return found[0]["ImageId"]


def based_on(tmp_path: Path, endpoint: str, base: str, *, ssh_username: str = "") -> Path:
    path = write_config(tmp_path, endpoint)
    text = path.read_text().replace('base = "ssm:/goldenbake-test/debian-12"', f'base = "{base}"')
    if ssh_username:
        text = text.replace("[aws]\n", f'[aws]\nssh_username = "{ssh_username}"\n')
    path.write_text(text)
    return path


@pytest.mark.parametrize(("owner", "user"), [(CANONICAL, "ubuntu"), (AMAZON, "ec2-user")])
def test_a_distribution_ami_is_logged_into_as_its_distribution_says(
    tmp_path: Path, moto_endpoint: str, cloud, owner: str, user: str
) -> None:
    ami = stock_ami(cloud, owner)
    app = make_app(based_on(tmp_path, moto_endpoint, ami))

    source = app.target.resolve_base(app.config.images["base"])

    assert source.variables["ssh_username"] == user


def test_a_layered_image_logs_in_as_its_parent_was_logged_into(
    tmp_path: Path, moto_endpoint: str, cloud, register_ami
) -> None:
    parent = register_ami("goldenbake-parent-1")
    images.tag(cloud, parent, {images.SSH_USER_TAG: "deploy", "bake:image": "parent"})
    images.publish(cloud, "parent", parent)
    path = based_on(tmp_path, moto_endpoint, "image:parent")
    path.write_text(
        path.read_text() + '\n[images.parent]\nbase = "ami-0123456789abcdef0"\nsteps = []\n'
        'verify = ["suites"]\n'
    )
    app = make_app(path)

    source = app.target.resolve_base(app.config.images["base"])

    assert (source.ami, source.variables["ssh_username"]) == (parent, "deploy")


def test_an_ami_of_no_known_distribution_asks_for_ssh_username(
    tmp_path: Path, moto_endpoint: str, cloud
) -> None:
    ami = stock_ami(cloud, WINDOWS_PUBLISHER)
    app = make_app(based_on(tmp_path, moto_endpoint, ami))

    with pytest.raises(InputError) as raised:
        app.target.resolve_base(app.config.images["base"])

    assert raised.value.exit_code == 2
    assert "images.base.base: cannot tell which user logs into" in raised.value.message
    assert f"owner {WINDOWS_PUBLISHER}" in raised.value.message
    assert "aws.ssh_username" in (raised.value.hint or "")


def test_ssh_username_in_the_config_wins(tmp_path: Path, moto_endpoint: str, cloud) -> None:
    ami = stock_ami(cloud, WINDOWS_PUBLISHER)
    app = make_app(based_on(tmp_path, moto_endpoint, ami, ssh_username="builder"))

    source = app.target.resolve_base(app.config.images["base"])

    assert source.variables["ssh_username"] == "builder"


def test_a_bad_ssh_username_is_bad_input(tmp_path: Path) -> None:
    from bake import config as config_module

    path = based_on(tmp_path, "http://127.0.0.1:1", "ami-0123456789abcdef0", ssh_username="Ad min")
    with pytest.raises(config_module.ConfigError, match=r"aws.ssh_username: 'Ad min' is not a"):
        config_module.load(path)
