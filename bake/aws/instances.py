"""A throwaway EC2 instance to verify a candidate AMI: its own key pair and security group, IMDSv2,
and everything deleted again on every path, including failures and Ctrl-C."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from bake import signals
from bake.aws.session import Cloud
from bake.errors import BakeError

WAIT = {"Delay": 5, "MaxAttempts": 120}


@dataclass(frozen=True)
class Throwaway:
    """What to launch and who may reach it: SSH from `ssh_cidr` to its public address (or its
    private one with `use_private_ip`), or with `session_manager` no inbound port at all (SSH goes
    through Systems Manager, whose agent registers with `instance_profile`)."""

    ami: str
    instance_type: str
    ssh_cidr: str | None
    run_id: str
    image: str
    subnet_id: str | None = None
    instance_profile: str | None = None
    use_private_ip: bool = False
    session_manager: bool = False


@dataclass(frozen=True)
class Launched:
    instance_id: str
    # What ssh connects to: an address, or with session_manager the instance id itself.
    address: str
    key_file: Path


def _vpc_of(cloud: Cloud, subnet_id: str | None) -> str:
    ec2 = cloud.client("ec2")
    if subnet_id:
        return ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["VpcId"]
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise BakeError(
            f"no default VPC in {cloud.region} to verify in", hint="set aws.subnet_id in bake.toml"
        )
    return vpcs[0]["VpcId"]


def vpc_cidr(cloud: Cloud, subnet_id: str | None) -> str:
    """The address range of the subnet's VPC (the default VPC without a subnet)."""
    vpc_id = _vpc_of(cloud, subnet_id)
    return str(cloud.client("ec2").describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"])


def _tags(spec: Throwaway, name: str, *kinds: str) -> list[dict[str, Any]]:
    """Tag specifications of what a request creates. `bake iam-policy` lets instances and volumes
    be launched, and instances be terminated, only with the run's tag."""
    tags = [
        {"Key": "Name", "Value": name},
        {"Key": "bake:run-id", "Value": spec.run_id},
        {"Key": "bake:purpose", "Value": f"verify {spec.image}"},
    ]
    return [{"ResourceType": kind, "Tags": tags} for kind in kinds]


def _terminate(cloud: Cloud, instance_id: str) -> None:
    ec2 = cloud.client("ec2")
    ec2.terminate_instances(InstanceIds=[instance_id])
    with suppress(WaiterError):
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)


@contextmanager
def throwaway(
    cloud: Cloud, spec: Throwaway, key_file: Path, record: Callable[[str, str], None]
) -> Iterator[Launched]:
    """Launch an instance from `spec.ami`, yield it once running, and remove all of it on exit.

    The private key of its temporary key pair is written to `key_file`, which the caller owns.
    `record(kind, id)` is called for each resource as soon as it exists. Cleanup runs in reverse
    order: the instance is terminated before its security group and key pair are deleted.
    """
    ec2 = cloud.client("ec2")
    name = f"goldenbake-verify-{spec.image}-{secrets.token_hex(4)}"
    with ExitStack() as cleanup:
        key_file = _key_pair(cloud, spec, name, key_file, record, cleanup)
        group_id = _security_group(cloud, spec, name, record, cleanup)
        request: dict[str, Any] = {
            "ImageId": spec.ami,
            "InstanceType": spec.instance_type,
            "KeyName": name,
            "MinCount": 1,
            "MaxCount": 1,
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": _tags(spec, name, "instance", "volume"),
        }
        if spec.subnet_id and not (spec.use_private_ip or spec.session_manager):
            # A subnet need not give its instances public addresses: ask for one.
            request["NetworkInterfaces"] = [
                {
                    "DeviceIndex": 0,
                    "SubnetId": spec.subnet_id,
                    "Groups": [group_id],
                    "AssociatePublicIpAddress": True,
                }
            ]
        else:
            request["SecurityGroupIds"] = [group_id]
            if spec.subnet_id:
                request["SubnetId"] = spec.subnet_id
        if spec.instance_profile:
            request["IamInstanceProfile"] = {"Name": spec.instance_profile}
        with signals.held():
            instance_id = ec2.run_instances(**request)["Instances"][0]["InstanceId"]
            record("instance", instance_id)
            cleanup.callback(_terminate, cloud, instance_id)
        address = _running_address(cloud, instance_id, spec)
        yield Launched(instance_id, address, key_file)


def _key_pair(
    cloud: Cloud,
    spec: Throwaway,
    name: str,
    key_file: Path,
    record: Callable[[str, str], None],
    cleanup: ExitStack,
) -> Path:
    """A temporary key pair, its private key written to `key_file` (mode 0600)."""
    ec2 = cloud.client("ec2")
    with signals.held():
        key = ec2.create_key_pair(
            KeyName=name, KeyType="ed25519", TagSpecifications=_tags(spec, name, "key-pair")
        )
        record("key-pair", name)
        cleanup.callback(ec2.delete_key_pair, KeyName=name)
    key_file.touch(mode=0o600)
    key_file.write_text(key["KeyMaterial"].rstrip("\n") + "\n", encoding="utf-8")
    return key_file


def _security_group(
    cloud: Cloud,
    spec: Throwaway,
    name: str,
    record: Callable[[str, str], None],
    cleanup: ExitStack,
) -> str:
    """A temporary security group that lets only the runner reach SSH; with session_manager
    one that lets nothing in (the instance's own outbound connection carries the session)."""
    ec2 = cloud.client("ec2")
    vpc_id = _vpc_of(cloud, spec.subnet_id)
    reached = "no inbound: Session Manager" if spec.session_manager else "SSH"
    with signals.held():
        group_id = ec2.create_security_group(
            GroupName=name,
            Description=f"goldenbake: verify {spec.image} ({reached})",
            VpcId=vpc_id,
            TagSpecifications=_tags(spec, name, "security-group"),
        )["GroupId"]
        record("security-group", group_id)
        cleanup.callback(ec2.delete_security_group, GroupId=group_id)
    if spec.session_manager or spec.ssh_cidr is None:
        return group_id
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": spec.ssh_cidr, "Description": "goldenbake runner"}],
            }
        ],
    )
    return group_id


def _running_address(cloud: Cloud, instance_id: str, spec: Throwaway) -> str:
    ec2 = cloud.client("ec2")
    try:
        ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    except WaiterError as exc:
        raise BakeError(f"verification instance {instance_id} did not start: {exc}") from None
    if spec.session_manager:
        return instance_id  # Session Manager finds it by its id, whatever its addresses
    private = spec.use_private_ip
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    address = instance.get("PrivateIpAddress") if private else instance.get("PublicIpAddress")
    if not address:
        kind = "private" if private else "public"
        raise BakeError(
            f"verification instance {instance_id} has no {kind} address",
            hint="set aws.ssh_interface or aws.subnet_id so the runner can reach it",
        )
    return address


def remaining(cloud: Cloud, run_id: str) -> dict[str, list[str]]:
    """Verification resources of a run that still exist (for tests and for a careful operator)."""
    ec2 = cloud.client("ec2")
    by_run = [{"Name": "tag:bake:run-id", "Values": [run_id]}]
    instances = [
        instance["InstanceId"]
        for reservation in ec2.describe_instances(Filters=by_run)["Reservations"]
        for instance in reservation["Instances"]
        if instance["State"]["Name"] not in ("terminated", "shutting-down")
    ]
    groups = [g["GroupId"] for g in ec2.describe_security_groups(Filters=by_run)["SecurityGroups"]]
    keys: list[str] = []
    with suppress(ClientError):
        keys = [k["KeyName"] for k in ec2.describe_key_pairs(Filters=by_run)["KeyPairs"]]
    return {"instances": instances, "security-groups": groups, "key-pairs": keys}
