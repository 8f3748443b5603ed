"""Instances as Systems Manager sees them: what their SSM agent needs to register, and a wait until
it has, before SSH goes through Session Manager."""

from __future__ import annotations

from typing import Any

from bake import polling
from bake.errors import BakeError

# What an instance's SSM agent needs for Session Manager (AWS's minimal instance profile for it):
# registering, and the message channels a session runs over.
SSM_AGENT_ACTIONS = [
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
]


def ping_status(cloud: Any, instance_id: str) -> str | None:
    """The instance's agent status as Systems Manager knows it (Online, ConnectionLost,
    Inactive), or None while its agent has not registered."""
    found = cloud.client("ssm").describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [instance_id]}]
    )["InstanceInformationList"]
    return found[0].get("PingStatus") if found else None


def wait_registered(cloud: Any, instance_id: str, profile: str, timeout: float) -> None:
    """Until the instance's SSM agent is online. Systems Manager has no boto3 waiter for it, so
    this polls every 5 seconds, at most `timeout` seconds; then it says what to check."""
    if polling.wait_until(lambda: ping_status(cloud, instance_id) == "Online", timeout, 5):
        return
    raise BakeError(
        f"the SSM agent of {instance_id} did not register with Systems Manager within "
        f"{timeout:.0f}s",
        hint=(
            "the image needs the agent (the ssm-agent step), instance profile "
            f"{profile} must allow {', '.join(SSM_AGENT_ACTIONS)}, and the subnet must reach "
            "Systems Manager (a NAT gateway, or VPC endpoints for ssm and ssmmessages)"
        ),
    )
