"""The whole chain on the local target, through the `bake` command as a user runs it: real Packer
builds under QEMU (`base`, then the `web` role on it), verification on a fresh boot, registration,
and blue/green swaps whose instances are QEMU machines behind HAProxy, answering through the
service's URL.

The tests run in file order and build on each other: the images are baked once for all of them,
and for the end-to-end session (test_releases.py and test_rollout.py go on from where these tests
leave demo; swaps and rollbacks under HTTP load are measured there, on the releases and on the
rollout's rebuilt images, so no image is built only to have something to swap to).
"""

from __future__ import annotations

import fcntl
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bake.history import History
from tests.e2e.project import REPO, Project

pytestmark = pytest.mark.vm

FAILING_SUITE = """
def test_the_image_ships_a_file_it_never_had(host):
    assert host.file("/etc/bake/this-file-was-never-baked").exists
"""


@pytest.fixture(scope="module")
def first(project: Project) -> dict[str, Any]:
    return project.ok("--json", "bake-and-swap", "demo").json


def runs(project: Project) -> list[dict[str, Any]]:
    return project.ok("--json", "history", "--limit", "100").json


def stage_statuses(run: dict[str, Any]) -> dict[str, str]:
    return {stage["name"]: stage["status"] for stage in run["stages"]}


def tags_of(project: Project, ami: str) -> dict[str, str]:
    (image,) = project.aws("ec2").describe_images(ImageIds=[ami])["Images"]
    return {tag["Key"]: tag["Value"] for tag in image["Tags"]}


def page(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_bake_and_swap_puts_demo_live_on_a_verified_ami_built_in_this_run(project, first) -> None:
    ami = first["ami"]
    assert first["live_color"] == "green"
    run = next(run for run in runs(project) if run["run_id"] == first["run_id"])
    assert run["status"] == "succeeded" and run["ami"] == ami
    assert stage_statuses(run) == {
        "render": "succeeded",
        "prepare": "succeeded",
        "build": "succeeded",
        "verify": "succeeded",
        "register": "succeeded",
        "rollout": "succeeded",
        "launch-template": "succeeded",
        "green-asg": "succeeded",
        "shift": "succeeded",
    }
    status = project.status()
    assert status["live"]["color"] == "green" and status["live"]["ami"] == ami
    assert status["live"]["healthy"] == status["live"]["desired"] == 2
    assert status["standby"]["color"] == "blue" and status["standby"]["ami"] != ami
    assert status["standby"]["healthy"] == 0, "blue runs the bare base disk, which serves nothing"
    rollout = status["rollout"]
    assert (rollout["state"], rollout["incoming"], rollout["ami"]) == ("live", "green", ami)
    assert (rollout["rollback"], rollout["rollback_ami"]) == ("blue", status["standby"]["ami"])
    parent = next(
        run for run in runs(project) if (run["command"], run["subject"]) == ("bake", "base")
    )
    assert parent["status"] == "succeeded" and parent["started"] < run["started"]


def test_every_instance_is_a_machine_and_the_url_answers_from_green(project, first) -> None:
    ami, tags = first["ami"], tags_of(project, first["ami"])
    green, blue = project.machines_up("green"), project.machines_up("blue")
    assert len(green) == len(blue) == 2
    for machine in green + blue:
        assert machine["state"] == "running"
        command = Path(f"/proc/{machine['pid']}/cmdline").read_bytes().split(b"\0")
        assert machine["instance_id"].encode() in b" ".join(command)
        assert command[command.index(b"-m") + 1] == b"384"
        assert command[command.index(b"-smp") + 1] == b"1"
    assert {machine["health"] for machine in green} == {"healthy"}
    assert {machine["health"] for machine in blue} == {"unhealthy"}
    assert {machine["ami"] for machine in green} == {ami}

    seen = [page(project.url()) for _ in range(10)]

    assert {answer["instance_id"] for answer in seen} == project.ids("green")
    for answer in seen:
        assert (answer["ami_id"], answer["image"]) == (ami, "web")
        assert answer["kernel"] == tags["bake:kernel"]
        assert answer["digest"] == tags["bake:digest"]


def test_target_health_is_what_the_load_balancer_sees(project, first) -> None:
    elbv2 = project.aws("elbv2")

    def states(name: str) -> dict[str, str]:
        (group,) = elbv2.describe_target_groups(Names=[name])["TargetGroups"]
        health = elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])
        return {
            entry["Target"]["Id"]: entry["TargetHealth"]["State"]
            for entry in health["TargetHealthDescriptions"]
        }

    green, blue = states("demo-green"), states("demo-blue")
    assert {green[instance] for instance in project.ids("green")} == {"healthy"}
    assert {blue[instance] for instance in project.ids("blue")} == {"unhealthy"}


def test_any_aws_client_sees_the_same_rollout(project, first) -> None:
    ami = first["ami"]
    ec2, elbv2 = project.aws("ec2"), project.aws("elbv2")
    (image,) = ec2.describe_images(ImageIds=[ami])["Images"]
    tags = {tag["Key"]: tag["Value"] for tag in image["Tags"]}
    assert tags["bake:verified"] == "true"
    assert re.fullmatch(r"[0-9a-f]{64}", tags["bake:digest"])
    assert tags["bake:source-ami"].startswith("ami-") and tags["bake:source-ami"] != ami
    parameter = project.aws("ssm").get_parameter(Name="/bake/images/web/latest")["Parameter"]
    assert parameter["Value"] == ami
    base = project.aws("ssm").get_parameter(Name="/bake/images/base/latest")["Parameter"]
    assert tags["bake:source-ami"] == base["Value"], "web is built on base's published AMI"
    (balancer,) = elbv2.describe_load_balancers(Names=["demo"])["LoadBalancers"]
    (listener,) = elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    weights = {
        group["TargetGroupArn"].split("/")[1]: group["Weight"]
        for group in listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"]
    }
    assert weights == {"demo-green": 100, "demo-blue": 0}
    (group,) = project.aws("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=["demo-green"]
    )["AutoScalingGroups"]
    template = group["LaunchTemplate"]
    (version,) = ec2.describe_launch_template_versions(
        LaunchTemplateId=template["LaunchTemplateId"],
        Versions=[template["Version"]],
    )["LaunchTemplateVersions"]
    assert version["LaunchTemplateData"]["ImageId"] == ami
    assert version["LaunchTemplateData"]["MetadataOptions"]["HttpTokens"] == "required"


def test_the_patched_kernel_is_the_one_that_booted(project, first) -> None:
    kernel = tags_of(project, first["ami"])["bake:kernel"]
    parent = next(
        run for run in runs(project) if (run["command"], run["subject"]) == ("bake", "base")
    )
    assert tags_of(project, parent["ami"])["bake:kernel"] == kernel, "web runs base's kernel"
    build_log = (project.state / "logs" / parent["run_id"] / "build-base.log").read_text()
    installed = re.findall(r"Setting up linux-image-(\d[^ ]*-cloud-amd64) ", build_log)
    assert installed, "the patch step installed no kernel: the base disk is not behind the archive"
    assert kernel == installed[-1]
    junit = (project.state / "logs" / parent["run_id"] / "verify-base.xml").read_text()
    assert 'failures="0"' in junit and "test_running_kernel_is_the_newest_installed" in junit


def test_a_second_bake_and_swap_of_the_same_image_is_already_live(project, first) -> None:
    before = project.status()
    second = project.ok("--json", "bake-and-swap", "demo").json
    assert second["already_live"] is True
    assert (second["live_color"], second["ami"]) == ("green", first["ami"])
    run = next(run for run in runs(project) if run["run_id"] == second["run_id"])
    statuses = stage_statuses(run)
    assert (statuses["build"], statuses["verify"], statuses["register"]) == ("skipped",) * 3
    assert (statuses["green-asg"], statuses["shift"]) == ("skipped", "skipped")
    assert project.status() == before, "the standby, the rollback target, was touched"


def test_a_locked_service_exits_3_and_changes_nothing(project) -> None:
    before = project.status()
    lock = project.state / "locks" / "service-demo.lock"
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = project.bake("swap", "demo")
        fcntl.flock(held, fcntl.LOCK_UN)
    assert result.code == 3
    assert "service-demo is locked" in result.err
    assert project.status() == before


def test_a_failed_verification_promotes_nothing_and_moves_no_traffic(project, tmp_path) -> None:
    before = project.status()
    suite = tmp_path / "failing"
    suite.mkdir()
    (suite / "test_extra.py").write_text(FAILING_SUITE)
    config = tmp_path / "canary.toml"
    config.write_text(f'''
packer_dir = "{REPO / "packer"}"

[images.canary]
base = "debian:bookworm"
steps = ["harden", "lineage"]
verify = ["{REPO / "serverspec_tests/base/test_lineage.py"}", "{suite}"]

[services.demo]
image = "canary"
capacity = 2
''')
    result = project.bake("bake-and-swap", "demo", config=config)
    assert result.code == 1, result.err[-2000:]
    assert result.err.strip().splitlines()[-1].startswith("error: verify: 2 checks, 1 failed")
    assert project.status() == before
    ec2 = project.aws("ec2")
    (canary,) = ec2.describe_images(
        Owners=["self"], Filters=[{"Name": "tag:bake:image", "Values": ["canary"]}]
    )["Images"]
    tags = {tag["Key"]: tag["Value"] for tag in canary["Tags"]}
    assert tags["bake:verified"] == "false"
    with pytest.raises(project.aws("ssm").exceptions.ParameterNotFound):
        project.aws("ssm").get_parameter(Name="/bake/images/canary/latest")
    run = runs(project)[0]
    assert run["status"] == "failed" and run["ami"] == canary["ImageId"]
    assert stage_statuses(run)["verify"] == "failed"
    assert "launch-template" not in stage_statuses(run)


def test_a_restarted_local_cloud_is_seeded_again_and_history_survives(project, first) -> None:
    runs_before = [run["run_id"] for run in runs(project)]
    project.ok("local", "down")
    assert project.ok("--json", "local", "status").json["running"] is False
    status = project.status()
    assert project.ok("--json", "local", "status").json["running"] is True
    assert status["live"]["color"] == "blue" and status["standby"] is None
    assert [run["run_id"] for run in runs(project)][-len(runs_before) :] == runs_before
    republished = project.aws("ssm").get_parameter(Name="/bake/images/web/latest")["Parameter"]
    url = project.url()
    swapped = project.ok("--json", "swap", "demo").json
    assert swapped["live_color"] == "green" and swapped["ami"] == republished["Value"]
    assert project.url() == url, "the service's URL changed with the restart"
    assert page(url)["instance_id"] in project.ids("green")
    image = project.aws("ec2").describe_images(ImageIds=[swapped["ami"]])["Images"][0]
    tags = {tag["Key"]: tag["Value"] for tag in image["Tags"]}
    assert tags["bake:verified"] == "true"
    newest = History(project.state / "history.sqlite").newest_verified("web")
    assert newest is not None and tags["bake:digest"] == newest.built.digest
