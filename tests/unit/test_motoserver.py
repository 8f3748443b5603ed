"""The local cloud's moto server answers target health from the data plane's health file: HAProxy's
view for the target groups the data plane manages, moto's own for the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from moto.elbv2.models import FakeTargetGroup

from bake.local import motoserver
from bake.local.motoserver import REGISTERING, STALE_AFTER, HealthFile

NOW = 1_000_000.0


def write(path: Path, groups: dict, updated: float = NOW) -> None:
    path.write_text(json.dumps({"updated": updated, "target_groups": groups}))


@pytest.fixture
def health(tmp_path: Path) -> HealthFile:
    return HealthFile(tmp_path / "health.json", clock=lambda: NOW)


def test_without_a_health_file_every_target_group_keeps_motos_answer(health) -> None:
    assert health.answer("demo-blue", "i-1") is None


def test_a_managed_target_answers_what_haproxy_saw(health) -> None:
    seen = {"State": "unhealthy", "Reason": "Target.Timeout", "Description": "L4TOUT"}
    write(health.path, {"demo-blue": {"i-1": seen}})

    assert health.answer("demo-blue", "i-1") == seen
    assert health.answer("demo-blue", "i-2") == REGISTERING
    assert health.answer("other", "i-1") is None


def test_a_stale_report_makes_managed_targets_unhealthy(health) -> None:
    write(health.path, {"demo-blue": {"i-1": {"State": "healthy"}}}, updated=NOW - STALE_AFTER - 1)

    answer = health.answer("demo-blue", "i-1")

    assert answer is not None
    assert (answer["State"], answer["Reason"]) == ("unhealthy", "Elb.InternalError")
    assert "bake local up" in answer["Description"]


def test_a_rewritten_file_is_read_again(health) -> None:
    write(health.path, {"demo-blue": {"i-1": {"State": "initial"}}})
    assert health.answer("demo-blue", "i-1") == {"State": "initial"}
    write(health.path, {"demo-blue": {"i-1": {"State": "healthy", "Reason": "x"}}})
    assert health.answer("demo-blue", "i-1") == {"State": "healthy", "Reason": "x"}


def test_a_half_written_file_keeps_the_last_whole_report(health) -> None:
    write(health.path, {"demo-blue": {"i-1": {"State": "healthy"}}})
    assert health.answer("demo-blue", "i-1") == {"State": "healthy"}
    health.path.write_text('{"updated": ')

    assert health.answer("demo-blue", "i-1") == {"State": "healthy"}


def test_describe_target_health_answers_from_the_file(cloud, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(FakeTargetGroup, "health_for", FakeTargetGroup.health_for)
    file = HealthFile(tmp_path / "health.json", clock=lambda: NOW)
    motoserver.install(file)
    ec2, elb = cloud.client("ec2"), cloud.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instances = [
        i["InstanceId"]
        for i in ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2)["Instances"]
    ]

    def group(name: str) -> str:
        arn = elb.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc)[
            "TargetGroups"
        ][0]["TargetGroupArn"]
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": i} for i in instances])
        return arn

    managed, unmanaged = group("demo-blue"), group("other")
    seen = {"State": "unhealthy", "Reason": "Target.ResponseCodeMismatch", "Description": "500"}
    write(file.path, {"demo-blue": {instances[0]: seen}})

    def states(arn: str) -> dict[str, tuple]:
        described = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        return {
            d["Target"]["Id"]: (d["TargetHealth"]["State"], d["TargetHealth"].get("Reason"))
            for d in described
        }

    assert states(managed) == {
        instances[0]: ("unhealthy", "Target.ResponseCodeMismatch"),
        instances[1]: ("initial", "Elb.RegistrationInProgress"),
    }
    assert states(unmanaged) == {instance: ("healthy", None) for instance in instances}
