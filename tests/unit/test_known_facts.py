"""What does not change once read is asked for once per Cloud: a target group by name, a numbered
launch template version. `bake --help` imports no cloud library at all."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from bake.aws import elbv2, launch_templates
from bake.aws.session import Cloud


def counting(cloud: Cloud, service: str) -> Counter[str]:
    """The API calls `cloud`'s client for `service` makes from now on, by operation."""
    calls: Counter[str] = Counter()
    client = cloud.client(service)
    client.meta.events.register("before-call.*.*", lambda model, **_: calls.update([model.name]))
    return calls


def test_a_target_group_is_described_once_and_a_missing_one_every_time(cloud: Cloud) -> None:
    vpc = cloud.client("ec2").create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    calls = counting(cloud, "elbv2")
    assert elbv2.find_target_group(cloud, "demo-green") is None
    assert elbv2.find_target_group(cloud, "demo-green") is None
    assert calls["DescribeTargetGroups"] == 2, "a missing group may appear: asked again"

    created = elbv2.create_target_group(cloud, "demo-green", Protocol="HTTP", Port=80, VpcId=vpc)
    found = [elbv2.find_target_group(cloud, "demo-green") for _ in range(3)]
    assert {group["TargetGroupArn"] for group in found} == {created["TargetGroupArn"]}
    assert calls["DescribeTargetGroups"] == 2, "the group this Cloud created was asked for"

    cloud.forget()
    assert (
        elbv2.find_target_group(cloud, "demo-green")["TargetGroupArn"]
        == (created["TargetGroupArn"])
    )
    assert calls["DescribeTargetGroups"] == 3


def test_a_numbered_version_is_read_once_and_default_every_time(cloud: Cloud) -> None:
    template = launch_templates.create(cloud, "demo", {"ImageId": "ami-12345678"})
    template_id = template["LaunchTemplateId"]
    calls = counting(cloud, "ec2")
    assert launch_templates.version(cloud, template_id, "$Default")["VersionNumber"] == 1
    assert launch_templates.version(cloud, template_id, 1)["LaunchTemplateData"]["ImageId"] == (
        "ami-12345678"
    )
    assert launch_templates.version(cloud, template_id, "1")["VersionNumber"] == 1
    assert calls["DescribeLaunchTemplateVersions"] == 1, "version 1 was read again"
    launch_templates.version(cloud, template_id, "$Default")
    assert calls["DescribeLaunchTemplateVersions"] == 2, "$Default can move: it is asked again"


def test_help_imports_no_cloud_library() -> None:
    probe = (
        "import sys\n"
        "from bake.cli import main\n"
        "assert main(['--help']) == 0\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'moto', 'pydantic') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
