"""Retiring old AMIs safely, and seeing when a layered image's base has rotated."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from bake import plan, retire
from bake.aws import images
from bake.config import from_dict
from bake.console import Console
from bake.history import History
from bake.records import RunOptions
from bake.stages.retire import Retire
from bake.state import StateDir
from bake.targets.aws import AwsTarget
from tests.conftest import REGION
from tests.unit.fakes import FakeRunner


def make_ami(cloud, name: str, verified: str | None, image: str = "base") -> str:
    """An AMI made from an instance (so it has a snapshot), tagged as the pipeline tags them."""
    ec2 = cloud.client("ec2")
    stock = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=stock, MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]
    ami = ec2.create_image(InstanceId=instance, Name=name)["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance])
    tags = {"bake:image": image}
    if verified is not None:
        tags["bake:verified"] = verified
    images.tag(cloud, ami, tags)
    return ami


@pytest.fixture
def amis(cloud, config, base_ami):
    """Five AMIs of `base`, oldest first; the second runs the live blue group."""
    from bake.local import seed

    made = {
        "old-in-use": make_ami(cloud, "base-1", "true"),
        "old-verified": make_ami(cloud, "base-2", "true"),
        "failed": make_ami(cloud, "base-3", "false"),
        "never": make_ami(cloud, "base-4", None),
        "newest": make_ami(cloud, "base-5", "true"),
    }
    seed.ensure_seeded(cloud, config, made["old-in-use"])
    make_ami(cloud, "web-1", "true", image="web")
    return made


def by_ami(decisions):
    return {decision.ami: decision for decision in decisions}


def test_keeps_the_newest_verified_and_everything_in_use(cloud, amis) -> None:
    decisions = by_ami(retire.decide(cloud, "base", keep=1))
    assert set(decisions) == set(amis.values()), "only this image's AMIs are considered"
    assert decisions[amis["newest"]].keep
    assert decisions[amis["old-in-use"]].keep
    assert decisions[amis["old-in-use"]].reason.startswith("in use by demo-blue")
    assert not decisions[amis["old-verified"]].keep
    assert decisions[amis["failed"]].reason == "failed verification"
    assert decisions[amis["never"]].reason == "never verified"


def images_of(cloud, image: str) -> list[dict]:
    return cloud.client("ec2").describe_images(
        Owners=["self"], Filters=[{"Name": "tag:bake:image", "Values": [image]}]
    )["Images"]


def same_creation_date(amis: list[str]) -> None:
    """Give the AMIs one CreationDate, as AMIs registered within one second get on moto.

    Registering them fast enough would depend on the clock; the moto server runs in this process, so
    its record of each AMI is set directly instead.
    """
    instant = datetime(2026, 11, 27, 6, 50, tzinfo=UTC)
    for ami in amis:
        ec2_backends[DEFAULT_ACCOUNT_ID][REGION].amis[ami].creation_date = instant


@pytest.mark.parametrize("registered", ["oldest run first", "newest run first"])
def test_amis_created_in_the_same_second_keep_the_newest_run(
    cloud, register_ami, registered: str
) -> None:
    # Names sort against the runs, so only the run id can put the newest first.
    runs = {
        "20261127T065000Z-0c0c0c": "base-c",
        "20261127T065100Z-0b0b0b": "base-b",
        "20261127T065200Z-0a0a0a": "base-a",
    }
    order = list(runs) if registered == "oldest run first" else list(reversed(runs))
    made = {}
    for run_id in order:
        made[run_id] = register_ami(runs[run_id])
        images.tag(
            cloud,
            made[run_id],
            {"bake:image": "base", "bake:verified": "true", "bake:run-id": run_id},
        )
    same_creation_date(list(made.values()))
    created = {image["CreationDate"] for image in images_of(cloud, "base")}
    assert len(created) == 1, "the AMIs must tie on CreationDate for this test to mean anything"

    decisions = retire.decide(cloud, "base", keep=1)
    assert [decision.ami for decision in decisions] == [made[run] for run in sorted(runs)[::-1]]
    assert [decision.keep for decision in decisions] == [True, False, False]


def test_the_published_latest_is_kept(cloud, amis) -> None:
    images.publish(cloud, "base", amis["old-verified"])
    decisions = by_ami(retire.decide(cloud, "base", keep=1))
    assert decisions[amis["old-verified"]].keep
    assert decisions[amis["old-verified"]].reason == "published as /bake/images/base/latest"


@pytest.fixture
def web_template(cloud, register_ami) -> dict[str, str]:
    """Four verified AMIs of `base`, oldest first, and launch template `web` at three versions:
    1 runs `a`, 2 (the default) runs `b`, 3 (the latest) runs `c`; `web-arm` version 1 runs `a`."""
    made = {}
    for n, key in enumerate(["a", "b", "c", "newest"]):
        made[key] = register_ami(f"base-{n}")
        images.tag(
            cloud,
            made[key],
            {
                "bake:image": "base",
                "bake:verified": "true",
                "bake:run-id": f"20261127T06500{n}Z-0a0b0c",
            },
        )
    ec2 = cloud.client("ec2")
    ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={"ImageId": made["a"]})
    for key in ["b", "c"]:
        ec2.create_launch_template_version(
            LaunchTemplateName="web", LaunchTemplateData={"ImageId": made[key]}
        )
    ec2.modify_launch_template(LaunchTemplateName="web", DefaultVersion="2")
    ec2.create_launch_template(
        LaunchTemplateName="web-arm", LaunchTemplateData={"ImageId": made["a"]}
    )
    cloud.client("autoscaling").create_launch_configuration(
        LaunchConfigurationName="web-lc", ImageId=made["a"], InstanceType="t3.micro"
    )
    return made


def mixed(version: str, *overrides: dict) -> dict:
    spec = {"LaunchTemplateName": "web", "Version": version}
    types = [{"InstanceType": "t3.micro"}, *overrides]
    return {
        "MixedInstancesPolicy": {
            "LaunchTemplate": {"LaunchTemplateSpecification": spec, "Overrides": types}
        }
    }


@pytest.mark.parametrize(
    ("launches_from", "in_use"),
    [
        pytest.param(
            {"LaunchTemplate": {"LaunchTemplateName": "web", "Version": "1"}}, {"a"}, id="pinned-1"
        ),
        pytest.param(
            {"LaunchTemplate": {"LaunchTemplateName": "web", "Version": "3"}}, {"c"}, id="pinned-3"
        ),
        pytest.param(
            {"LaunchTemplate": {"LaunchTemplateName": "web", "Version": "$Default"}},
            {"b"},
            id="$Default",
        ),
        pytest.param(
            {"LaunchTemplate": {"LaunchTemplateName": "web", "Version": "$Latest"}},
            {"c"},
            id="$Latest",
        ),
        pytest.param({"LaunchTemplate": {"LaunchTemplateName": "web"}}, {"b"}, id="no-version"),
        pytest.param({"LaunchConfigurationName": "web-lc"}, {"a"}, id="launch-configuration"),
        pytest.param(mixed("$Default"), {"b"}, id="mixed-instances"),
        pytest.param(mixed("2"), {"b"}, id="mixed-instances-pinned"),
        pytest.param(
            mixed(
                "$Latest",
                {
                    "InstanceType": "t4g.micro",
                    "LaunchTemplateSpecification": {"LaunchTemplateName": "web-arm"},
                },
            ),
            {"c", "a"},
            id="mixed-instances-override",
        ),
    ],
)
def test_an_ami_a_group_launches_from_is_never_retired(
    cloud, web_template, launches_from: dict, in_use: set[str]
) -> None:
    cloud.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName="web-asg",
        MinSize=0,
        MaxSize=1,
        AvailabilityZones=[f"{REGION}a"],
        **launches_from,
    )
    decisions = by_ami(retire.decide(cloud, "base", keep=1))
    kept = {key for key, ami in web_template.items() if decisions[ami].keep}
    assert kept == in_use | {"newest"}
    for key in in_use:
        assert decisions[web_template[key]].reason.startswith("in use by web-asg (launch ")
    for key in {"a", "b", "c"} - in_use:
        assert decisions[web_template[key]].reason == "older than the newest 1 verified"


def test_retire_deregisters_and_deletes_snapshots(cloud, amis) -> None:
    decision = by_ami(retire.decide(cloud, "base", keep=1))[amis["old-verified"]]
    assert decision.snapshots
    retire.retire(cloud, decision)
    assert images.describe(cloud, amis["old-verified"]) is None
    snapshots = cloud.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert not set(decision.snapshots) & {snapshot["SnapshotId"] for snapshot in snapshots}


def test_the_stage_retires_and_dry_run_only_lists(cloud, amis, make_context) -> None:
    class Target:
        name = "local"
        discarded: list[str] = []

        def __init__(self) -> None:
            self.cloud = cloud

        def discard(self, ami: str) -> None:
            self.discarded.append(ami)

    ctx = make_context(None, command="retire")
    ctx.image, ctx.target = ctx.config.images["base"], Target()
    ctx.options = RunOptions(keep=1, dry_run=True)
    dry = Retire(ctx).run()
    assert dry.detail == "would retire 3 of 5 AMIs of base"
    assert all(images.describe(cloud, ami) for ami in amis.values())
    assert ctx.target.discarded == []
    ctx.options = RunOptions(keep=1)
    done = Retire(ctx).run()
    assert done.detail == "retired 3 of 5 AMIs of base"
    left = {ami for ami in amis.values() if images.describe(cloud, ami)}
    assert left == {amis["newest"], amis["old-in-use"]}
    assert sorted(ctx.target.discarded) == sorted(set(amis.values()) - left)
    recorded = [r.id for r in ctx.history.runs()[0].resources if r.kind == "retired-ami"]
    assert sorted(recorded) == sorted(set(amis.values()) - left)
    keeps = {decision["ami"]: decision["keep"] for decision in done.outputs()["decisions"]}
    assert {ami for ami, keep in keeps.items() if keep} == left


def aws_target(tmp_path: Path, endpoint: str, **aws: str | None):
    (tmp_path / "suites").mkdir(exist_ok=True)
    config = from_dict(
        {
            "target": "aws",
            # The made-up distribution's AMIs are this account's: no SSH user to read from them.
            "aws": {"endpoint_url": endpoint, "ssh_username": "admin", **aws},
            "images": {
                "base": {"base": "ssm:/test/debian-12", "steps": [], "verify": ["suites"]},
                "web": {"base": "image:base", "steps": [], "verify": ["suites"]},
            },
        },
        tmp_path / "bake.toml",
    )
    state = StateDir(tmp_path / "state").ensure()
    return config, AwsTarget(
        config, state, History(state.history_db), FakeRunner(), Console(quiet=True)
    )


def test_a_plan_says_a_bake_could_not_tell_its_ssh_user(tmp_path, cloud, moto_endpoint) -> None:
    config, target = aws_target(tmp_path, moto_endpoint, ssh_username=None)
    debian = make_ami(cloud, "debian-12-a", None, image="debian")
    cloud.client("ssm").put_parameter(Name="/test/debian-12", Value=debian, Type="String")

    base = {p.image: p for p in plan.plan(config, target)}["base"]

    assert base.action == "blocked", "a bake would stop before launching anything"
    assert f"cannot tell which user logs into debian-12-a ({debian}" in base.reason


def test_plan_orders_parents_first_and_sees_a_rotated_base(tmp_path, cloud, moto_endpoint) -> None:
    config, target = aws_target(tmp_path, moto_endpoint)
    assert plan.layered_order(config) == ["base", "web"]
    debian = make_ami(cloud, "debian-12-a", None, image="debian")
    cloud.client("ssm").put_parameter(Name="/test/debian-12", Value=debian, Type="String")

    first = {p.image: p for p in plan.plan(config, target)}
    assert (
        first["base"].action == "bake" and first["base"].reason == "no verified AMI published yet"
    )
    assert first["web"].action == "blocked"
    assert "image 'base' has no verified AMI yet" in first["web"].reason

    base_v1 = make_ami(cloud, "base-v1", "true")
    images.tag(cloud, base_v1, {"bake:source-ami": debian})
    images.publish(cloud, "base", base_v1)
    web_v1 = make_ami(cloud, "web-v1", "true", image="web")
    images.tag(cloud, web_v1, {"bake:source-ami": base_v1})
    images.publish(cloud, "web", web_v1)
    current = {p.image: p for p in plan.plan(config, target)}
    assert current["base"].action == current["web"].action == "up to date"

    base_v2 = make_ami(cloud, "base-v2", "true")
    images.publish(cloud, "base", base_v2)
    rotated = {p.image: p for p in plan.plan(config, target)}
    assert rotated["web"].action == "bake"
    assert rotated["web"].reason == f"base rotated: built from {base_v1}, base is now {base_v2}"
