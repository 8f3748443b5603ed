"""AWS tags as a dict: every resource describes them as a list of Key/Value pairs."""

from __future__ import annotations

from typing import Any


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    """The resource's tags (an AMI, an Auto Scaling group, a VPC, ...) as a dict."""
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}
