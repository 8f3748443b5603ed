"""What a run asked of AWS as IAM authorizes it, and a small evaluator of policy documents.

moto records every request it serves (its request recorder), the pipeline's boto3 calls and
Packer's alike. Each becomes one `Check` per resource AWS authorizes the action on: the resource's
ARN and the request's condition context (tags on create, the resource's tags, the creating action,
a launch template). Requests that create tagged resources, groups that run a launch template and
instances given a profile add the checks AWS makes besides the action itself (ec2:CreateTags,
ec2:RunInstances, iam:PassRole). `allows` then evaluates a policy's Allow statements against a
check: wildcards in actions and resources, and the condition operators `bake iam-policy` writes.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session

ACCOUNT = "123456789012"  # moto's account
READS = re.compile(r"^(Describe|Get|List)")
# Reads that IAM authorizes on a resource.
SCOPED_READS = {"ssm:GetParameter", "dynamodb:GetItem", "iam:GetRole", "iam:GetInstanceProfile"}

Context = dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Request:
    """One recorded request: who sent it (boto3 or packer), the IAM action, its region and
    parameters (query parameters flat, `Tag.1.Key`; JSON bodies as they are)."""

    caller: str
    access_key: str
    action: str
    region: str
    params: dict[str, Any]

    def members(self, prefix: str) -> list[str]:
        """`prefix.1`, `prefix.2`, ... in order (`prefix.member.N` as well)."""
        found = re.compile(rf"^{re.escape(prefix)}\.(?:member\.)?(\d+)$")
        numbered = [
            (int(m.group(1)), value)
            for key, value in self.params.items()
            if (m := found.match(key))
        ]
        return [value for _, value in sorted(numbered)]

    def tags(self, prefix: str) -> dict[str, str]:
        """Tags in `prefix.N.Key` / `prefix.N.Value` (or `prefix.member.N.Key`)."""
        keys = self.members_of(prefix, "Key")
        values = self.members_of(prefix, "Value")
        return {key: values.get(number, "") for number, key in keys.items()}

    def members_of(self, prefix: str, name: str) -> dict[int, str]:
        found = re.compile(rf"^{re.escape(prefix)}\.(?:member\.)?(\d+)\.{name}$")
        return {
            int(m.group(1)): value for key, value in self.params.items() if (m := found.match(key))
        }

    def tag_specifications(self, prefix: str = "TagSpecification") -> dict[str, dict[str, str]]:
        """Resource type -> the tags a create request gives it."""
        types = self.members_of(prefix, "ResourceType")
        return {kind: self.tags(f"{prefix}.{number}.Tag") for number, kind in types.items()}


@dataclass(frozen=True)
class Check:
    """One authorization AWS makes: this action on this resource, in this context."""

    caller: str
    action: str
    resource: str
    context: Context = field(default_factory=dict)

    def __str__(self) -> str:
        context = f" {self.context}" if self.context else ""
        return f"{self.caller}: {self.action} on {self.resource}{context}"


def read_recording(path: Path) -> list[Request]:
    requests = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        headers = entry["headers"]
        scope = re.search(
            r"Credential=([^/]+)/\d+/([^/]+)/([^/]+)/", headers.get("Authorization", "")
        )
        if scope is None:
            continue
        access_key, region, service = scope.groups()
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode()
        if "X-Amz-Target" in headers:
            action, params = headers["X-Amz-Target"].split(".")[-1], json.loads(body or "{}")
        elif service == "ram":  # REST with JSON bodies: the operation is the path
            path = urllib.parse.urlsplit(entry["url"]).path.lower()
            action, params = _rest_operations(service)[path], json.loads(body or "{}")
        else:
            query = {key: values[0] for key, values in urllib.parse.parse_qs(body).items()}
            action = query.pop("Action")
            params = query
        caller = "packer" if "aws-sdk-go" in headers.get("User-Agent", "") else "boto3"
        requests.append(Request(caller, access_key, f"{service}:{action}", region, params))
    return requests


@functools.cache
def _rest_operations(service: str) -> dict[str, str]:
    """A REST service's operations by their (lowercased) request path, from botocore's model."""
    model = botocore.session.get_session().get_service_model(service)
    return {
        model.operation_model(name).http["requestUri"].lower(): name
        for name in model.operation_names
    }


# The ARNs of resources, by the prefix of their ids.
_EC2_KINDS = {
    "i": "instance",
    "vol": "volume",
    "sg": "security-group",
    "ami": "image",
    "snap": "snapshot",
    "lt": "launch-template",
    "subnet": "subnet",
    "vpc": "vpc",
}


def ec2_arn(region: str, resource_id: str, kind: str | None = None) -> str:
    kind = kind or _EC2_KINDS[resource_id.split("-")[0]]
    account = "" if kind in ("image", "snapshot") else ACCOUNT
    return f"arn:aws:ec2:{region}:{account}:{kind}/{resource_id}"


def _resource_tags(tags: dict[str, str]) -> Context:
    return {f"aws:ResourceTag/{key}": (value,) for key, value in tags.items()}


def _request_tags(tags: dict[str, str]) -> Context:
    context: Context = {f"aws:RequestTag/{key}": (value,) for key, value in tags.items()}
    if tags:
        context["aws:TagKeys"] = tuple(tags)
    return context


@dataclass
class Cloud:
    """What the account held after the run, for the checks that depend on it: the tags of each
    resource by id, and the role of each instance profile."""

    tags: dict[str, dict[str, str]]
    profile_roles: dict[str, str]

    def existing(
        self, request: Request, action: str, resource_id: str, kind: str | None = None
    ) -> Check:
        tags = self.tags.get(resource_id, {})
        return Check(
            request.caller, action, ec2_arn(request.region, resource_id, kind), _resource_tags(tags)
        )


def checks(request: Request, cloud: Cloud) -> list[Check]:
    """Every authorization AWS makes for `request`."""
    service = request.action.split(":")[0]
    if READS.match(request.action.split(":")[1]) and request.action not in SCOPED_READS:
        return [Check(request.caller, request.action, "*")]
    by_service: dict[str, Callable[[Request, Cloud], list[Check]]] = {
        "ec2": _ec2,
        "elasticloadbalancing": _elb,
        "autoscaling": _autoscaling,
        "ssm": _ssm,
        "dynamodb": _dynamodb,
        "iam": _iam,
        "ram": _ram,
    }
    return by_service[service](request, cloud)


def profiles_made(requests: Iterable[Request]) -> dict[str, str]:
    """Instance profile -> its role, for the profiles a run made itself (and removed since)."""
    return {
        r.params["InstanceProfileName"]: r.params["RoleName"]
        for r in requests
        if r.action == "iam:AddRoleToInstanceProfile"
    }


def _created(request: Request, kind: str, tags: dict[str, str], name: str = "*") -> list[Check]:
    """A resource a request creates, and the tagging on create AWS authorizes with it."""
    arn = ec2_arn(request.region, name, kind)
    made = [Check(request.caller, request.action, arn, _request_tags(tags))]
    if tags:
        context = {**_request_tags(tags), "ec2:CreateAction": (request.action.split(":")[1],)}
        made.append(Check(request.caller, "ec2:CreateTags", arn, context))
    return made


def _ec2(request: Request, cloud: Cloud) -> list[Check]:
    action, params = request.action, request.params
    specs = request.tag_specifications()
    match action.split(":")[1]:
        case "CreateKeyPair":
            return _created(request, "key-pair", specs.get("key-pair", {}), params["KeyName"])
        case "DeleteKeyPair":
            return [cloud.existing(request, action, params["KeyName"], "key-pair")]
        case "CreateSecurityGroup":
            vpc = ec2_arn(request.region, params.get("VpcId", "*"), "vpc")
            return [
                *_created(request, "security-group", specs.get("security-group", {})),
                Check(request.caller, action, vpc),
            ]
        case "RunInstances":
            return _run_instances(request, cloud)
        case "CreateImage":
            return [
                cloud.existing(request, action, params["InstanceId"]),
                *_created(request, "image", {}),
                *_created(request, "snapshot", {}),
            ]
        case "CopyImage" | "RegisterImage":
            return _created(request, "image", {})
        case "CreateTags":
            tags = _request_tags(request.tags("Tag"))
            return [
                Check(c.caller, c.action, c.resource, {**c.context, **tags})
                for resource_id in request.members("ResourceId")
                for c in [cloud.existing(request, action, resource_id)]
            ]
        case "CreateLaunchTemplateVersion" | "DeleteLaunchTemplateVersions":
            return [cloud.existing(request, action, params["LaunchTemplateId"])]
    ids = [
        *request.members("InstanceId"),
        *(
            params[key]
            for key in ("InstanceId", "ImageId", "SnapshotId", "GroupId", "VolumeId")
            if key in params
        ),
    ]
    if not ids:
        raise KeyError(f"no ARNs known for {action} {params}")
    return [cloud.existing(request, action, resource_id) for resource_id in ids]


def _run_instances(request: Request, cloud: Cloud) -> list[Check]:
    params, specs, region = request.params, request.tag_specifications(), request.region
    used = [
        ec2_arn(region, params["ImageId"], "image") if "ImageId" in params else None,
        ec2_arn(region, params.get("SubnetId", "*"), "subnet"),
        ec2_arn(region, "*", "network-interface"),
        *(ec2_arn(region, group, "security-group") for group in request.members("SecurityGroupId")),
        ec2_arn(region, params["KeyName"], "key-pair") if "KeyName" in params else None,
    ]
    made = [
        *_created(request, "instance", specs.get("instance", {})),
        *_created(request, "volume", specs.get("volume", {})),
        *(Check(request.caller, request.action, arn) for arn in used if arn),
    ]
    profile = params.get("IamInstanceProfile.Name")
    if profile:
        role = f"arn:aws:iam::{ACCOUNT}:role/{cloud.profile_roles[profile]}"
        passed = {"iam:PassedToService": ("ec2.amazonaws.com",)}
        made.append(Check(request.caller, "iam:PassRole", role, passed))
    return made


def _launch_template_use(request: Request) -> list[Check]:
    """Creating or updating a group to run a launch template: AWS asks whether the caller may
    run instances from it."""
    template = request.params.get("LaunchTemplate.LaunchTemplateId")
    if not template:
        return []
    arn = ec2_arn(request.region, template)
    return [Check(request.caller, "ec2:RunInstances", arn, {"ec2:LaunchTemplate": (arn,)})]


def _autoscaling(request: Request, cloud: Cloud) -> list[Check]:
    name = request.params["AutoScalingGroupName"]
    group = f"autoScalingGroup:*:autoScalingGroupName/{name}"
    arn = f"arn:aws:autoscaling:{request.region}:{ACCOUNT}:{group}"
    made = [Check(request.caller, request.action, arn), *_launch_template_use(request)]
    tags = request.tags("Tags")
    if request.action == "autoscaling:CreateAutoScalingGroup" and tags:
        made.append(
            Check(request.caller, "autoscaling:CreateOrUpdateTags", arn, _request_tags(tags))
        )
    return made


def _elb(request: Request, cloud: Cloud) -> list[Check]:
    params = request.params
    match request.action.split(":")[1]:
        case "CreateTargetGroup":
            elb = f"arn:aws:elasticloadbalancing:{request.region}:{ACCOUNT}"
            arn = f"{elb}:targetgroup/{params['Name']}/*"
            return [Check(request.caller, request.action, arn)]
        case "ModifyListener":
            return [Check(request.caller, request.action, params["ListenerArn"])]
        case "ModifyRule":
            return [Check(request.caller, request.action, params["RuleArn"])]
        case "AddTags" | "RemoveTags":
            tags = request.tags("Tags")
            context = {
                **_request_tags(tags),
                "aws:TagKeys": tuple(tags or request.members("TagKeys")),
            }
            return [
                Check(request.caller, request.action, arn, context)
                for arn in request.members("ResourceArns")
            ]
    raise KeyError(f"no ARNs known for {request.action} {params}")


def _ssm(request: Request, cloud: Cloud) -> list[Check]:
    params = request.params
    match request.action.split(":")[1]:
        case "StartSession":
            # The instance (with its tags, as ssm:resourceTag/KEY) and the document, each.
            instance = cloud.existing(request, request.action, params["Target"])
            tags = {
                key.replace("aws:ResourceTag/", "ssm:resourceTag/"): value
                for key, value in instance.context.items()
            }
            document = f"arn:aws:ssm:{request.region}::document/{params['DocumentName']}"
            return [
                Check(request.caller, request.action, instance.resource, tags),
                Check(request.caller, request.action, document),
            ]
        case "TerminateSession":
            arn = f"arn:aws:ssm:{request.region}:{ACCOUNT}:session/{params['SessionId']}"
            return [Check(request.caller, request.action, arn)]
    name = params["Name"]
    account = "" if name.startswith("/aws/service/") else ACCOUNT
    arn = f"arn:aws:ssm:{request.region}:{account}:parameter/{name.lstrip('/')}"
    return [Check(request.caller, request.action, arn)]


def _ram(request: Request, cloud: Cloud) -> list[Check]:
    """A share, made or changed: the resources and principals the request names are its context
    (ram:ResourceArn, ram:Principal)."""
    params = request.params
    context: Context = {}
    if params.get("resourceArns"):
        context["ram:ResourceArn"] = tuple(params["resourceArns"])
    if params.get("principals"):
        context["ram:Principal"] = tuple(params["principals"])
    share = params.get("resourceShareArn")
    arn = share or f"arn:aws:ram:{request.region}:{ACCOUNT}:resource-share/*"
    return [Check(request.caller, request.action, arn, context)]


def _iam(request: Request, cloud: Cloud) -> list[Check]:
    """Roles and instance profiles by name; adding a role to a profile passes the role too (AWS
    asks for iam:PassRole on it, naming no service)."""
    params, made = request.params, []
    if "InstanceProfileName" in params:
        profile = f"arn:aws:iam::{ACCOUNT}:instance-profile/{params['InstanceProfileName']}"
        made.append(Check(request.caller, request.action, profile))
    if "RoleName" in params:
        role = f"arn:aws:iam::{ACCOUNT}:role/{params['RoleName']}"
        if request.action == "iam:AddRoleToInstanceProfile":
            made.append(Check(request.caller, "iam:PassRole", role))
        elif "InstanceProfileName" not in params:
            made.append(Check(request.caller, request.action, role))
    if not made:
        raise KeyError(f"no ARNs known for {request.action} {params}")
    return made


def _dynamodb(request: Request, cloud: Cloud) -> list[Check]:
    arn = f"arn:aws:dynamodb:{request.region}:{ACCOUNT}:table/{request.params['TableName']}"
    return [Check(request.caller, request.action, arn)]


# Evaluating a policy


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def like(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    """IAM's wildcards: `*` any run of characters, `?` any one."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda expected, value: expected == value,
    "StringLike": like,
    "ArnLike": like,
}


def _holds(operator: str, key: str, expected: Any, context: Context) -> bool:
    qualifier, _, name = operator.rpartition(":")
    values = context.get(key)
    if name == "Null":
        return (values is None) == (str(expected).lower() == "true")
    compare = _OPERATORS[name]
    if values is None:
        return qualifier == "ForAllValues"
    matched = [any(compare(pattern, value) for pattern in _listed(expected)) for value in values]
    return all(matched) if qualifier == "ForAllValues" else any(matched)


def allows(document: dict[str, Any], check: Check) -> bool:
    """Whether an Allow statement of `document` covers the check (there are no Deny statements)."""
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow", statement
        if not any(
            like(a, check.action, case_sensitive=False) for a in _listed(statement["Action"])
        ):
            continue
        if not any(like(r, check.resource) for r in _listed(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        if all(
            _holds(operator, key, expected, check.context)
            for operator, pairs in conditions.items()
            for key, expected in pairs.items()
        ):
            return True
    return False


def refused(document: dict[str, Any], all_checks: Iterable[Check]) -> list[str]:
    """The checks `document` does not allow, each once, as lines."""
    return sorted({str(check) for check in all_checks if not allows(document, check)})
