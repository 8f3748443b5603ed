"""A rollout, decided once: which colour takes which AMI, and which colour stays as the way back.

A swap writes its rollout before it changes anything, as the tag `bake:rollout:SERVICE` on the
service's load balancer, so that a rerun on any machine finds it, and in history. A rerun of an
interrupted swap resumes that rollout instead of deciding again: the colour that was live before it
(the rollback target) keeps its capacity and launch template version until the rollout ends.

States: `rolling` (started, not finished: a run is at it, or it was interrupted), `live` (the new
colour took all traffic and passed its soak), `rolled-back` (traffic went back to the rollback
target), `failed` (stopped before any traffic moved, the incoming colour put back as it was).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from bake.errors import BakeError

if TYPE_CHECKING:
    from bake.aws.session import Cloud

TAG_PREFIX = "bake:rollout:"
STATES = ("rolling", "live", "rolled-back", "failed")

# The tag value's fields, in order; load balancer tag values allow letters, digits, spaces and
# `_ . : / = + - @` only, so the value is `key=value` pairs separated by spaces.
_FIELDS = {
    "run": "run_id",
    "state": "state",
    "to": "incoming",
    "ami": "ami",
    "from": "rollback",
    "from_ami": "rollback_ami",
    "at": "started",
    "release": "release",
    "from_release": "rollback_release",
}
# Fields a record may lack: the rollback colour's AMI, and releases (older records, services
# without one).
_OPTIONAL = ("from_ami", "release", "from_release")
_VALUE = re.compile(r"^[\w.:/=+\-@]+$")


@dataclass(frozen=True)
class Rollout:
    """One service's rollout of one AMI (and release) to one colour."""

    run_id: str
    state: str
    incoming: str
    ami: str
    rollback: str
    rollback_ami: str | None
    started: str
    # The release the incoming colour runs and the one the rollback colour runs (their versions),
    # for services that ship releases.
    release: str | None = None
    rollback_release: str | None = None

    @property
    def pending(self) -> bool:
        """Started and not finished: the next swap resumes it."""
        return self.state == "rolling"

    def to(self, state: str) -> Rollout:
        return replace(self, state=state)

    def encode(self) -> str:
        """The tag value: `run=... state=... to=green ami=... from=blue from_ami=... at=...`."""
        pairs = []
        for key, name in _FIELDS.items():
            value = getattr(self, name)
            if value is not None:
                pairs.append(f"{key}={value}")
        return " ".join(pairs)

    @classmethod
    def decode(cls, text: str) -> Rollout:
        """The rollout a tag value holds; a BakeError when it is not one this toolkit wrote."""
        values: dict[str, Any] = dict.fromkeys(_FIELDS.values())
        for pair in text.split():
            key, _, value = pair.partition("=")
            if key in _FIELDS and _VALUE.match(value):
                values[_FIELDS[key]] = value
        missing = [k for k, name in _FIELDS.items() if values[name] is None and k not in _OPTIONAL]
        if missing or values["state"] not in STATES:
            raise BakeError(
                f"the rollout record '{text}' is not readable (missing {', '.join(missing)})",
                hint="once the traffic is where it should be, remove the load balancer's tag",
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tag_key(service: str) -> str:
    return f"{TAG_PREFIX}{service}"


def read(cloud: Cloud, load_balancer_arn: str, service: str) -> Rollout | None:
    """The service's rollout as its load balancer's tag records it; None when there is none."""
    described = cloud.client("elbv2").describe_tags(ResourceArns=[load_balancer_arn])
    for entry in described["TagDescriptions"]:
        for tag in entry.get("Tags", []):
            if tag["Key"] == tag_key(service):
                return Rollout.decode(tag["Value"])
    return None


def write(cloud: Cloud, load_balancer_arn: str, service: str, rollout: Rollout) -> None:
    """Record the rollout on the load balancer (replacing the service's previous one)."""
    cloud.client("elbv2").add_tags(
        ResourceArns=[load_balancer_arn],
        Tags=[{"Key": tag_key(service), "Value": rollout.encode()}],
    )
