"""SSM Run Command: a shell command on instances that run the SSM agent, and what each answered.
No inbound port is needed, which is how an organization that forbids SSH reaches its instances."""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from bake.aws.errors import error_code
from bake.aws.session import Cloud

DOCUMENT = "AWS-RunShellScript"
DONE = {"Success", "Failed", "Cancelled", "TimedOut", "DeliveryTimedOut", "Undeliverable"}


def run_shell(
    cloud: Cloud, instances: list[str], command: str, *, timeout: float = 120, poll: float = 2.0
) -> dict[str, tuple[str, str]]:
    """Send `command` to every instance at once; instance -> (its output, an error or "")."""
    if not instances:
        return {}
    ssm = cloud.client("ssm")
    sent = ssm.send_command(
        InstanceIds=instances,
        DocumentName=DOCUMENT,
        Parameters={"commands": [command]},
        TimeoutSeconds=max(30, int(timeout)),
        Comment="goldenbake: what this instance runs",
    )
    command_id = sent["Command"]["CommandId"]
    answers: dict[str, tuple[str, str]] = {}
    deadline = time.monotonic() + timeout
    while len(answers) < len(instances):
        for instance in instances:
            if instance not in answers and (answer := _answer(ssm, command_id, instance)):
                answers[instance] = answer
        if len(answers) < len(instances):
            if time.monotonic() > deadline:
                break
            time.sleep(poll)
    for instance in instances:
        answers.setdefault(instance, ("", f"no answer over SSM within {timeout:.0f}s"))
    return answers


def _answer(ssm: Any, command_id: str, instance: str) -> tuple[str, str] | None:
    try:
        invocation = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance)
    except ClientError as exc:
        if error_code(exc) == "InvocationDoesNotExist":
            return None  # not delivered yet
        raise
    status = invocation.get("Status", "")
    if status not in DONE:
        return None
    error = "" if status == "Success" else f"{status}: {invocation.get('StandardErrorContent', '')}"
    return invocation.get("StandardOutputContent", ""), error.strip()
