"""Retiring old AMIs safely, and seeing when a layered image's base has rotated."""

from __future__ import annotations

from pathlib import Path

import pytest

from bake import plan, retire
from bake.aws import images
from bake.config import from_dict
from bake.console import Console
from bake.history import History
from bake.records import RunOptions
from bake.stages.retire import Retire
from bake.state import StateDir
from bake.targets.aws import AwsTarget
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


def test_the_published_latest_is_kept(cloud, amis) -> None:
    images.publish(cloud, "base", amis["old-verified"])
    decisions = by_ami(retire.decide(cloud, "base", keep=1))
    assert decisions[amis["old-verified"]].keep
    assert decisions[amis["old-verified"]].reason == "published as /bake/images/base/latest"


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
    ctx.options = RunOptions(keep=1)
    Retire(ctx).run()
    left = {ami for ami in amis.values() if images.describe(cloud, ami)}
    assert left == {amis["newest"], amis["old-in-use"]}
    assert sorted(ctx.target.discarded) == sorted(set(amis.values()) - left)


def aws_target(tmp_path: Path, endpoint: str):
    (tmp_path / "suites").mkdir(exist_ok=True)
    config = from_dict(
        {
            "target": "aws",
            "aws": {"endpoint_url": endpoint},
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
