"""The published parameter where consumer accounts read it: shared through AWS RAM with
`share_parameter = "ram"` (an advanced parameter, one share per image and region, principals kept
in step with the config), and written into each consumer account's own parameter in every region
the image is published in. moto's RAM is completed in-process (tests/integration/moto_gaps.py)."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import boto3
import pytest

from bake import config as config_module
from bake.aws import images, resource_shares
from bake.aws.session import Cloud
from tests.integration.aws_project import make_app, write_config
from tests.integration.moto_gaps import ResourceShares
from tests.request_shapes import problems

CONSUMER = "111122223333"
OTHER = "444455556666"
COPY_REGION = "eu-west-1"


def tier(cloud: Cloud, image: str) -> str:
    (found,) = cloud.client("ssm").describe_parameters(
        ParameterFilters=[{"Key": "Name", "Values": [images.parameter_name(image)]}]
    )["Parameters"]
    return str(found["Tier"])


def associations(cloud: Cloud, share_arn: str, kind: str) -> list[str]:
    found = cloud.client("ram").get_resource_share_associations(
        associationType=kind, resourceShareArns=[share_arn]
    )["resourceShareAssociations"]
    return sorted(association["associatedEntity"] for association in found)


def the_share(cloud: Cloud, image: str) -> str:
    (share,) = [
        found
        for found in cloud.client("ram").get_resource_shares(resourceOwner="SELF")["resourceShares"]
        if found["name"] == resource_shares.share_name(image)
    ]
    return str(share["resourceShareArn"])


def sent_requests(cloud: Cloud) -> list[tuple[Any, dict[str, Any]]]:
    """Every request the pipeline's clients send from now on (model, parameters)."""
    sent: list[tuple[Any, dict[str, Any]]] = []
    cloud.session.events.register(
        "before-parameter-build",
        lambda params, model, **_: sent.append((model, copy.deepcopy(params))),
    )
    return sent


@pytest.mark.packer
def test_the_parameter_is_shared_and_written_where_the_consumer_reads_it(
    tmp_path: Path, moto_endpoint: str, cloud: Cloud, source_ami: str, monkeypatch
) -> None:
    shares = ResourceShares(monkeypatch)
    role = f"arn:aws:iam::{CONSUMER}:role/goldenbake-consumer"
    path = write_config(
        tmp_path, moto_endpoint, encrypt_boot=False, ami_users=[CONSUMER], ami_regions=[COPY_REGION]
    )
    path.write_text(
        path.read_text().replace(
            'communicator = "none"\n',
            f'communicator = "none"\nshare_parameter = "ram"\n'
            f'consumer_roles = {{ "{CONSUMER}" = "{role}" }}\n',
        )
    )
    app = make_app(path)
    sent = sent_requests(app.target.cloud)
    europe = cloud.in_region(COPY_REGION)

    app.run("bake", image="base")

    home, there = images.published(cloud, "base"), images.published(europe, "base")
    assert home and there and home != there
    for region_cloud in (cloud, europe):
        assert tier(region_cloud, "base") == "Advanced", "RAM shares advanced parameters only"
        share = the_share(region_cloud, "base")
        assert associations(region_cloud, share, "PRINCIPAL") == [CONSUMER]
        assert associations(region_cloud, share, "RESOURCE") == [
            images.parameter_arn(region_cloud, "base")
        ], "its own region's parameter"
    consumer = cloud.as_role(role)
    assert images.published(consumer, "base") == home
    assert images.published(consumer.in_region(COPY_REGION), "base") == there, (
        "the consumer's parameter in the copy's region names the copy"
    )
    assert shares.requests == [], "made once, nothing to change"
    ram_requests = [(m, p) for m, p in sent if m.service_model.service_name == "ram"]
    assert sorted({m.name for m, _ in ram_requests}) == ["CreateResourceShare", "GetResourceShares"]
    assert [problem for m, p in sent for problem in problems(m.input_shape, p)] == []

    # A rebuild publishes again: the share stays the same one, with the same principal.
    first = the_share(cloud, "base")
    app.run("bake", image="base", options=_rebuild())
    assert the_share(cloud, "base") == first
    assert shares.requests == [], "nothing to associate: the principals did not change"


def _rebuild() -> Any:
    from bake.records import RunOptions

    return RunOptions(rebuild=True, reverify=True)


def test_a_share_follows_the_accounts_and_organizations_it_is_given(
    cloud: Cloud, monkeypatch
) -> None:
    shares = ResourceShares(monkeypatch)
    organization = cloud.client("organizations").create_organization(FeatureSet="ALL")
    org_arn = organization["Organization"]["Arn"]
    cloud.client("ssm").put_parameter(
        Name=images.parameter_name("base"), Value="ami-1", Type="String", Tier="Advanced"
    )
    parameter = images.parameter_arn(cloud, "base")

    made = resource_shares.share(cloud, "base", parameter, [CONSUMER, org_arn])
    changed = resource_shares.share(cloud, "base", parameter, [org_arn, OTHER])
    same = resource_shares.share(cloud, "base", parameter, [OTHER, org_arn])

    assert made.created and sorted(made.added) == sorted([CONSUMER, org_arn])
    assert (changed.created, changed.added, changed.removed) == (False, (OTHER,), (CONSUMER,))
    assert changed.share_arn == made.share_arn == same.share_arn, "never made again"
    assert (same.added, same.removed) == ((), ())
    assert associations(cloud, made.share_arn, "PRINCIPAL") == sorted([OTHER, org_arn])
    share = made.share_arn
    assert shares.requests == [
        ("AssociateResourceShare", {"resourceShareArn": share, "principals": [OTHER]}),
        ("DisassociateResourceShare", {"resourceShareArn": share, "principals": [CONSUMER]}),
    ]
    model = boto3.session.Session().client("ram", region_name="us-east-1").meta.service_model
    for action, params in shares.requests:
        assert problems(model.operation_model(action).input_shape, params) == []


@pytest.mark.parametrize(
    ("share", "images_aws", "message"),
    [
        ("s3", {"ami_users": [CONSUMER]}, "aws.share_parameter: 's3' is not a way to share"),
        ("ram", {}, 'aws.share_parameter: "ram" shares each image\'s parameter with its ami_users'),
    ],
)
def test_bad_sharing_settings_are_bad_input(
    tmp_path: Path, share: str, images_aws: dict, message: str
) -> None:
    raw = tomllib.loads(write_config(tmp_path, "http://127.0.0.1:1").read_text())
    raw["aws"]["share_parameter"] = share
    raw["images"]["base"]["aws"] = {"encrypt_boot": False, **images_aws}
    with pytest.raises(config_module.ConfigError, match=message) as raised:
        config_module.from_dict(raw, tmp_path / "bake.toml")
    assert raised.value.exit_code == 2 and "\n" not in raised.value.message
