"""The local cloud's moto server, with target health that the local data plane reports, and
launch template versions whose user data moto's Auto Scaling can launch from.

moto answers `healthy` for every registered target. On the local target the instances are real
machines behind a real load balancer, so `describe-target-health` must say what that load balancer
sees: the supervisor writes HAProxy's view of every target group it manages into a health file,
and this process (moto's own server, started as `python -m bake.local.motoserver`) answers from it.
Target groups the data plane does not manage keep moto's answers.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HEALTH_ENV = "BAKE_LOCAL_HEALTH"
# A health file older than this means the supervisor is gone: nothing checks the targets.
STALE_AFTER = 15.0
REGISTERING = {
    "State": "initial",
    "Reason": "Elb.RegistrationInProgress",
    "Description": "Target registration is in progress (its machine is not checked yet)",
}


class HealthFile:
    """The data plane's health report, re-read when the file changes."""

    def __init__(self, path: Path, clock: Any = time.time) -> None:
        self.path = path
        self.clock = clock
        self._stamp: tuple[int, int] | None = None
        self._report: dict[str, Any] = {}

    def report(self) -> dict[str, Any]:
        try:
            stat = self.path.stat()
        except OSError:
            self._stamp, self._report = None, {}
            return self._report
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            try:
                self._report = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return self._report  # written as we read it; the next call reads it whole
            self._stamp = stamp
        return self._report

    def answer(self, target_group: str, instance_id: str) -> dict[str, str] | None:
        """The target's health as the data plane sees it; None for an unmanaged target group."""
        report = self.report()
        groups = report.get("target_groups") or {}
        if target_group not in groups:
            return None
        age = self.clock() - float(report.get("updated", 0))
        if age > STALE_AFTER:
            return {
                "State": "unhealthy",
                "Reason": "Elb.InternalError",
                "Description": f"the local data plane has not checked targets for {age:.0f}s "
                "(`bake local up` starts it again)",
            }
        return groups[target_group].get(instance_id) or REGISTERING


def install(health: HealthFile) -> None:
    """Make moto's target groups answer from `health` for the targets moto calls healthy."""
    from moto.elbv2.models import FakeHealthStatus, FakeTargetGroup

    original = FakeTargetGroup.health_for

    def health_for(group: FakeTargetGroup, target: dict[str, Any], ec2_backend: Any) -> Any:
        status = original(group, target, ec2_backend)
        if status.status != "healthy":  # not registered, draining, a stopped instance
            return status
        seen = health.answer(group.name, status.instance_id)
        if seen is None:
            return status
        return FakeHealthStatus(
            status.instance_id,
            status.port,
            status.health_check_port,
            seen["State"],
            seen.get("Reason"),
            seen.get("Description"),
        )

    FakeTargetGroup.health_for = health_for  # type: ignore[method-assign,assignment]


def mend_launch_template_versions() -> None:
    """moto 5 keeps the UserData of CreateLaunchTemplateVersion as the request's text, where
    CreateLaunchTemplate keeps what its models expect; an Auto Scaling group then fails inside
    moto to launch from such a version (AWS launches it). New versions get user data as moto's
    models hold it. Installing it twice changes nothing."""
    from moto.ec2.models.launch_templates import LaunchTemplate
    from moto.ec2.utils import parse_user_data

    original = LaunchTemplate.create_version
    if getattr(original, "mended", False):
        return

    def create_version(template: LaunchTemplate, data: dict[str, Any], description: str) -> Any:
        if isinstance(data.get("UserData"), str):
            data = {**data, "UserData": parse_user_data(data["UserData"])}
        return original(template, data, description)

    create_version.mended = True  # type: ignore[attr-defined]
    LaunchTemplate.create_version = create_version  # type: ignore[method-assign,assignment]


def main(argv: list[str] | None = None) -> None:
    """moto's server, with the health hook when $BAKE_LOCAL_HEALTH names the health file."""
    from moto import server

    mend_launch_template_versions()
    path = os.environ.get(HEALTH_ENV)
    if path:
        install(HealthFile(Path(path)))
    server.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
