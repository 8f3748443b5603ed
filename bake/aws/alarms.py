"""CloudWatch alarms that watch a service while its traffic moves."""

from __future__ import annotations

from typing import Any

from bake.aws.session import Cloud


def _described(cloud: Cloud, names: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    paginator = cloud.client("cloudwatch").get_paginator("describe_alarms")
    # DescribeAlarms takes at most 100 names a call.
    for start in range(0, len(names), 100):
        for page in paginator.paginate(
            AlarmNames=names[start : start + 100], AlarmTypes=["MetricAlarm", "CompositeAlarm"]
        ):
            found += page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])
    return found


def missing(cloud: Cloud, names: list[str]) -> list[str]:
    """The names among `names` that no alarm has."""
    if not names:
        return []
    existing = {alarm["AlarmName"] for alarm in _described(cloud, names)}
    return [name for name in names if name not in existing]


def firing(cloud: Cloud, names: list[str]) -> dict[str, str]:
    """The alarms among `names` that are in ALARM, with their state reason."""
    if not names:
        return {}
    return {
        alarm["AlarmName"]: alarm.get("StateReason", "")
        for alarm in _described(cloud, names)
        if alarm.get("StateValue") == "ALARM"
    }
