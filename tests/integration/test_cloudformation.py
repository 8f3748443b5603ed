"""examples/cloudformation against the real cfn-lint and the session's moto server: both templates
lint clean, deploy to CREATE_COMPLETE, and a real `bake swap`, configured from the stacks' outputs
and holding its lease in the fleet stack's lock table, moves the service's listener to green.

moto's CloudFormation leaves out what these tests therefore cannot see: a change set's stack
(what `aws cloudformation deploy` makes) has no outputs, so stacks are made with CreateStack;
`Rules` are not evaluated; a table's TimeToLiveSpecification is not applied. cfn-lint checks
those.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from bake.aws import managed_instances
from bake.aws.session import Cloud
from bake.cli import main
from tests.integration.aws_project import REPO, toml_value, write_config

EXAMPLES = REPO / "examples" / "cloudformation"
SERVICE_TEMPLATE = EXAMPLES / "service.yaml"
FLEET_TEMPLATE = EXAMPLES / "fleet.yaml"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"
PRINCIPAL = "arn:aws:iam::123456789012:role/ci-runner"

# Which service stack output holds which key of [services.NAME] (README.md there says the same).
SERVICE_KEYS = {
    "load_balancer": "LoadBalancer",
    "listener_port": "ListenerPort",
    "launch_template": "LaunchTemplate",
}
COLOR_KEYS = {"blue": ("BlueAsg", "BlueTargetGroup"), "green": ("GreenAsg", "GreenTargetGroup")}


def test_the_shipped_fleet_template_is_what_the_command_prints(capsys) -> None:
    config = REPO / "examples" / "aws.bake.toml"
    assert main(["--config", str(config), "iam-policy", "--format", "cloudformation"]) == 0
    printed = capsys.readouterr().out
    assert printed == FLEET_TEMPLATE.read_text(), (
        "examples/cloudformation/fleet.yaml is stale: bake --config examples/aws.bake.toml "
        "iam-policy --format cloudformation > examples/cloudformation/fleet.yaml"
    )


def test_the_templates_pass_cfn_lint(tmp_path: Path, capsys) -> None:
    """Both shipped templates, and a fleet whose policy is split into managed policies, lint with
    no error, warning or informational finding; a broken copy proves the linter really looked."""
    many = tmp_path / "many.bake.toml"
    (tmp_path / "suites").mkdir()
    services = "".join(
        f'[services.service-{number:02}]\nimage = "base"\ncapacity = 2\n\n' for number in range(20)
    )
    many.write_text(
        'target = "aws"\n[aws]\nregion = "eu-west-1"\n\n[images.base]\n'
        'base = "ssm:/aws/service/debian/release/12/latest/amd64"\nsteps = ["patch"]\n'
        f'verify = ["suites"]\n\n{services}'
    )
    assert main(["--config", str(many), "iam-policy", "--format", "cloudformation"]) == 0
    split = tmp_path / "split-fleet.yaml"
    split.write_text(capsys.readouterr().out)
    assert "AWS::IAM::ManagedPolicy" in split.read_text()
    broken = tmp_path / "broken-service.yaml"
    broken.write_text(
        SERVICE_TEMPLATE.read_text().replace(
            "HealthCheckPath: /health", "HealthCheckPath: /health\n      HealthCheckPage: /health"
        )
    )
    files = [SERVICE_TEMPLATE, FLEET_TEMPLATE, split, broken]
    linted = subprocess.run(
        [str(CFN_LINT), "--format", "json", "--include-checks", "I"]
        + ["--regions", "us-east-1", "eu-west-1", "--", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    found: dict[str, list[str]] = {str(path): [] for path in files}
    for match in json.loads(linted.stdout):
        found[match["Filename"]].append(f"{match['Rule']['Id']}: {match['Message']}")
    broken_findings = found.pop(str(broken))
    assert any("HealthCheckPage" in finding for finding in broken_findings), broken_findings
    assert found == {str(path): [] for path in files[:3]}, linted.stderr


def stack_outputs(cloud: Cloud, name: str, body: str, parameters: dict[str, str]) -> dict[str, str]:
    """Create a stack, wait for CREATE_COMPLETE, and give its outputs."""
    client = cloud.client("cloudformation")
    client.create_stack(
        StackName=name,
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    client.get_waiter("stack_create_complete").wait(
        StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    (stack,) = client.describe_stacks(StackName=name)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}


def network(cloud: Cloud) -> dict[str, str]:
    """A VPC with a subnet in each of two zones: the service stack's VPC inputs."""
    ec2 = cloud.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.8.{index}.0/24", AvailabilityZone=zone)[
            "Subnet"
        ]["SubnetId"]
        for index, zone in enumerate((f"{cloud.region}a", f"{cloud.region}b"))
    ]
    return {"VpcId": vpc, "SubnetIds": ",".join(subnets)}


def verified_amis(cloud: Cloud, count: int) -> list[str]:
    """AMIs of image `base` that passed verification, as `bake register` leaves them."""
    ec2 = cloud.client("ec2")
    amis = [
        ec2.register_image(
            Name=f"goldenbake-base-{number}", Architecture="x86_64", RootDeviceName="/dev/xvda"
        )["ImageId"]
        for number in range(1, count + 1)
    ]
    ec2.create_tags(
        Resources=amis,
        Tags=[{"Key": "bake:verified", "Value": "true"}, {"Key": "bake:image", "Value": "base"}],
    )
    return amis


def role_policy(cloud: Cloud, role_arn: str) -> dict[str, Any]:
    """The fleet role's inline policy as the account holds it."""
    iam = cloud.client("iam")
    role = role_arn.rsplit("/", 1)[1]
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == ["goldenbake"]
    document = iam.get_role_policy(RoleName=role, PolicyName="goldenbake")["PolicyDocument"]
    # moto keeps the mapping CloudFormation gave it and answers with its repr; AWS with JSON.
    if isinstance(document, str):
        document = ast.literal_eval(document)
    return document


def allows(policy: dict[str, Any], action: str, arn: str) -> bool:
    """Whether a statement of `policy` allows `action` on `arn` (conditions aside)."""
    for statement in policy["Statement"]:
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        if action in statement["Action"] and any(fnmatchcase(arn, r) for r in resources):
            return True
    return False


def test_the_shipped_templates_deploy_on_moto(cloud: Cloud, moto_endpoint: str) -> None:
    (blue_ami,) = verified_amis(cloud, 1)
    outputs = stack_outputs(
        cloud,
        "shop",
        SERVICE_TEMPLATE.read_text(),
        {"ServiceName": "shop", "ImageId": blue_ami, "MaxSize": "3", **network(cloud)},
    )
    assert {key: outputs[key] for key in ("LoadBalancer", "LaunchTemplate", "BlueAsg")} == {
        "LoadBalancer": "shop",
        "LaunchTemplate": "shop",
        "BlueAsg": "shop-blue",
    }
    elb, ec2 = cloud.client("elbv2"), cloud.client("ec2")
    (listener,) = elb.describe_listeners(ListenerArns=[outputs["ListenerArn"]])["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (80, "HTTP")
    assert listener["DefaultActions"] == [
        {"Type": "forward", "TargetGroupArn": outputs["BlueTargetGroupArn"]}
    ]
    (target_group,) = elb.describe_target_groups(Names=[outputs["BlueTargetGroup"]])["TargetGroups"]
    assert (target_group["HealthCheckProtocol"], target_group["HealthCheckPath"]) == (
        "HTTP",
        "/health",
    )
    (template,) = ec2.describe_launch_template_versions(
        LaunchTemplateName=outputs["LaunchTemplate"]
    )["LaunchTemplateVersions"]
    data = template["LaunchTemplateData"]
    assert (data["ImageId"], data["MetadataOptions"]["HttpTokens"]) == (blue_ami, "required")
    assert "IamInstanceProfile" not in data and "InstanceProfile" not in outputs
    (group,) = cloud.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[outputs["BlueAsg"]]
    )["AutoScalingGroups"]
    assert group["LaunchTemplate"]["Version"] == "1", "pinned, never $Latest"
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (2, 2, 3)
    assert group["TargetGroupARNs"] == [outputs["BlueTargetGroupArn"]]
    assert {t["Key"]: t["Value"] for t in group["Tags"]} == {
        "bake:service": "shop",
        "bake:color": "blue",
    }
    in_service = [i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "InService"]
    assert len(in_service) == 2
    health = elb.describe_target_health(TargetGroupArn=outputs["BlueTargetGroupArn"])
    assert sorted(t["Target"]["Id"] for t in health["TargetHealthDescriptions"]) == sorted(
        in_service
    )

    # With a certificate and an instance profile: HTTPS, and instances that hold the profile.
    certificate = cloud.client("acm").request_certificate(DomainName="api.example.com")
    api = stack_outputs(
        cloud,
        "api",
        SERVICE_TEMPLATE.read_text(),
        {
            "ServiceName": "api",
            "ImageId": blue_ami,
            "ListenerPort": "443",
            "CertificateArn": certificate["CertificateArn"],
            "InstanceProfileName": "api-web",
            **network(cloud),
        },
    )
    (listener,) = elb.describe_listeners(ListenerArns=[api["ListenerArn"]])["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (443, "HTTPS")
    assert listener["Certificates"] == [{"CertificateArn": certificate["CertificateArn"]}]
    (template,) = ec2.describe_launch_template_versions(LaunchTemplateName="api")[
        "LaunchTemplateVersions"
    ]
    assert template["LaunchTemplateData"]["IamInstanceProfile"] == {"Name": "api-web"}
    assert (api["InstanceProfile"], api["ListenerPort"]) == ("api-web", "443")

    # The shipped fleet template is for examples/aws.bake.toml, whose region is eu-west-1.
    europe = Cloud("eu-west-1", endpoint_url=moto_endpoint)
    fleet = stack_outputs(
        europe, "goldenbake-fleet", FLEET_TEMPLATE.read_text(), {"TrustedPrincipalArn": PRINCIPAL}
    )
    assert fleet["LockTable"] == "goldenbake-locks"
    table = europe.client("dynamodb").describe_table(TableName=fleet["LockTable"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "LockID", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "LockID", "AttributeType": "S"}]
    role = europe.client("iam").get_role(RoleName=fleet["RoleArn"].rsplit("/", 1)[1])["Role"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"AWS": PRINCIPAL}
    assert role["MaxSessionDuration"] == 14_400
    policy = role_policy(europe, fleet["RoleArn"])
    table_arn = table["TableArn"]
    assert allows(policy, "dynamodb:PutItem", table_arn)
    assert not allows(policy, "dynamodb:PutItem", table_arn.replace("goldenbake-locks", "other"))
    # The example reaches instances through Session Manager: the build instance profile the
    # config names, whose role allows the SSM agent and nothing else, and the pipeline may pass.
    assert fleet["BuildInstanceProfile"] == "goldenbake-build"
    iam = europe.client("iam")
    (build_role,) = iam.get_instance_profile(InstanceProfileName="goldenbake-build")[
        "InstanceProfile"
    ]["Roles"]
    agent = iam.get_role_policy(RoleName=build_role["RoleName"], PolicyName="ssm-agent")
    document = agent["PolicyDocument"]
    document = ast.literal_eval(document) if isinstance(document, str) else document
    (statement,) = document["Statement"]
    assert sorted(statement["Action"]) == sorted(managed_instances.SSM_AGENT_ACTIONS)
    assert allows(policy, "iam:PassRole", build_role["Arn"])
    assert not allows(policy, "iam:CreateRole", build_role["Arn"]), "no role making with a profile"


def service_table(outputs: dict[str, str]) -> str:
    """The keys of [services.NAME] that locate the blue environment, from the stack's outputs."""
    keys: dict[str, Any] = {key: outputs[output] for key, output in SERVICE_KEYS.items()}
    keys["listener_port"] = int(keys["listener_port"])
    for color, (asg, target_group) in COLOR_KEYS.items():
        keys[color] = {"asg": outputs[asg], "target_group": outputs[target_group]}
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in keys.items())


class LeaseWatch:
    """Reads the lock table whenever the run moves the listener."""

    def __init__(self, cloud: Cloud, table: str) -> None:
        self.cloud, self.table = cloud, table
        self.held_at_shift: list[list[str]] = []

    def before_call(self, model: Any, **_: Any) -> None:
        if model.name == "ModifyListener":
            items = self.cloud.client("dynamodb").scan(TableName=self.table)["Items"]
            self.held_at_shift.append(sorted(item["LockID"]["S"] for item in items))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = Cloud.client

        def client(cloud: Cloud, service: str) -> Any:
            fresh = service not in cloud._clients
            made = original(cloud, service)
            if fresh and service == "elbv2" and cloud is not self.cloud:
                made.meta.events.register("before-call", self.before_call)
            return made

        monkeypatch.setattr(Cloud, "client", client)


def test_a_swap_on_the_stacks_moves_the_listener_to_green(
    tmp_path: Path, cloud: Cloud, moto_endpoint: str, monkeypatch, capsys
) -> None:
    blue_ami, green_ami = verified_amis(cloud, 2)
    service = stack_outputs(
        cloud,
        "shop",
        SERVICE_TEMPLATE.read_text(),
        {"ServiceName": "shop", "ImageId": blue_ami, **network(cloud)},
    )
    # The bake service is `demo`; the stack's names reach it through the outputs alone.
    config = write_config(tmp_path, moto_endpoint)
    config.write_text(config.read_text() + service_table(service))
    assert main(["--config", str(config), "iam-policy", "--format", "cloudformation"]) == 0
    fleet = stack_outputs(
        cloud, "goldenbake-fleet", capsys.readouterr().out, {"TrustedPrincipalArn": PRINCIPAL}
    )
    config.write_text(
        config.read_text().replace(
            'communicator = "none"', f'communicator = "none"\nlock_table = "{fleet["LockTable"]}"'
        )
    )
    watch = LeaseWatch(cloud, fleet["LockTable"])
    watch.install(monkeypatch)

    assert main(["--config", str(config), "swap", "demo", "--ami", green_ami]) == 0
    assert "demo: green is live on " + green_ami in capsys.readouterr().out

    elb, autoscaling = cloud.client("elbv2"), cloud.client("autoscaling")
    (green_group,) = elb.describe_target_groups(Names=[service["GreenTargetGroup"]])["TargetGroups"]
    (listener,) = elb.describe_listeners(ListenerArns=[service["ListenerArn"]])["Listeners"]
    (forward,) = listener["DefaultActions"]
    weights = {g["TargetGroupArn"]: g["Weight"] for g in forward["ForwardConfig"]["TargetGroups"]}
    assert weights == {green_group["TargetGroupArn"]: 100, service["BlueTargetGroupArn"]: 0}
    assert green_group["HealthCheckPath"] == "/health", "mirrored from the blue target group"
    groups = {
        group["AutoScalingGroupName"]: group
        for group in autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[service["BlueAsg"], service["GreenAsg"]]
        )["AutoScalingGroups"]
    }
    green, blue = groups[service["GreenAsg"]], groups[service["BlueAsg"]]
    assert green["LaunchTemplate"]["LaunchTemplateId"] == service["LaunchTemplateId"]
    assert green["LaunchTemplate"]["Version"] == "2"
    assert green["TargetGroupARNs"] == [green_group["TargetGroupArn"]]
    assert {t["Key"]: t["Value"] for t in green["Tags"]}["bake:color"] == "green"
    (version,) = cloud.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=service["LaunchTemplateId"], Versions=["2"]
    )["LaunchTemplateVersions"]
    assert version["LaunchTemplateData"]["ImageId"] == green_ami
    assert (blue["LaunchTemplate"]["Version"], blue["DesiredCapacity"]) == ("1", 2), "kept warm"

    assert watch.held_at_shift == [["service-demo"]] * len(watch.held_at_shift)
    assert watch.held_at_shift, "the lease was held in the fleet's table while traffic moved"
    assert cloud.client("dynamodb").scan(TableName=fleet["LockTable"])["Items"] == []

    # The fleet role may do what this swap did, to the very resources it did it to.
    policy = role_policy(cloud, fleet["RoleArn"])
    table = cloud.client("dynamodb").describe_table(TableName=fleet["LockTable"])["Table"]
    for action in ("PutItem", "UpdateItem", "DeleteItem"):
        assert allows(policy, f"dynamodb:{action}", table["TableArn"])
    assert allows(policy, "elasticloadbalancing:ModifyListener", service["ListenerArn"])
    assert allows(policy, "elasticloadbalancing:CreateTargetGroup", green_group["TargetGroupArn"])
    assert allows(policy, "autoscaling:CreateAutoScalingGroup", green["AutoScalingGroupARN"])
    assert allows(policy, "autoscaling:UpdateAutoScalingGroup", blue["AutoScalingGroupARN"])
