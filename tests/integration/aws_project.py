"""A goldenbake project on the aws target pointed at the test session's moto server, with ssh and
the suites' pytest stood in for behind the runner and Packer really run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bake.app import App
from bake.console import Console
from tests.unit.fakes import FakeRunner

REPO = Path(__file__).resolve().parents[2]
BASE_PARAMETER = "/goldenbake-test/debian-12"

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="{failures}" tests="2">
<testcase classname="test_web" name="test_health"/>
<testcase classname="test_web" name="test_nginx">{failure}</testcase>
</testsuite></testsuites>"""


def toml_value(value: Any) -> str:
    """A TOML value: inline tables for dicts, JSON for the rest (TOML accepts it)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return json.dumps(value)


def write_config(tmp_path: Path, endpoint: str, **image_aws: Any) -> Path:
    (tmp_path / "suites").mkdir(exist_ok=True)
    (tmp_path / "suites" / "test_ok.py").write_text("def test_ok(host):\n    pass\n")
    aws_table = "".join(f"{key} = {toml_value(value)}\n" for key, value in image_aws.items())
    path = tmp_path / "bake.toml"
    path.write_text(f'''
target = "aws"
state_dir = "{tmp_path / "state"}"
packer_dir = "{REPO / "packer"}"

[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
communicator = "none"

[images.base]
base = "ssm:{BASE_PARAMETER}"
steps = ["patch", "harden", "lineage"]
verify = ["suites"]

[images.base.aws]
{aws_table}

[services.demo]
image = "base"
capacity = 2
health_timeout = 5
soak = 0
''')
    return path


# Canonical's account: the distribution's AMIs are logged into as `ubuntu`.
CANONICAL = "099720109477"


def publish_source_ami(cloud: Any) -> str:
    """A distribution's public AMI with an EBS root (one of moto's stock Ubuntu AMIs), named by
    BASE_PARAMETER as a distribution's parameter names one."""
    (stock, *_) = cloud.client("ec2").describe_images(
        Owners=[CANONICAL], Filters=[{"Name": "root-device-type", "Values": ["ebs"]}]
    )["Images"]
    cloud.client("ssm").put_parameter(Name=BASE_PARAMETER, Value=stock["ImageId"], Type="String")
    return stock["ImageId"]


def write_junit(failures: int):
    def write(argv: list[str]) -> None:
        path = next(arg.split("=", 1)[1] for arg in argv if arg.startswith("--junitxml="))
        failure = '<failure message="nginx is not running"/>' if failures else ""
        Path(path).write_text(JUNIT.format(failures=failures, failure=failure))

    return write


def make_app(config_path: Path, *, failures: int = 0) -> App:
    # packer really builds; `bake swap` processes started by `bake rollout` really run.
    runner = FakeRunner(real=frozenset({"packer", "-m bake"}))
    runner.on("ssh", stdout="6.1.0-56-cloud-amd64\n")
    runner.on(
        lambda argv: argv[1:3] == ["-m", "pytest"],
        returncode=1 if failures else 0,
        effect=write_junit(failures),
    )
    return App(config_path, runner=runner, console=Console(quiet=True))
