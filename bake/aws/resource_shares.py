"""AWS RAM resource shares: an image's published parameter shared, in one region, with the
accounts and organizations its AMIs are shared with, so that they read the latest verified AMI id
(by the parameter's ARN) where it is published.

One share per image and region, found by its name. Principals that are no longer wanted are
disassociated, new ones associated: a share is never made again, since an account outside the
organization must accept each share it is invited to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# States of an association that stands (or is on its way).
_HELD = ("ASSOCIATED", "ASSOCIATING")


def share_name(image: str) -> str:
    return f"goldenbake-{image}-latest"


@dataclass(frozen=True)
class Shared:
    """What `share` did: the share, and the principals it added and removed."""

    share_arn: str
    created: bool
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def share(cloud: Any, image: str, resource_arn: str, principals: Sequence[str]) -> Shared:
    """Share `resource_arn` (the image's parameter) with exactly `principals` (account ids and
    organization ARNs) through the image's share in the cloud's region, making it if missing."""
    ram = cloud.client("ram")
    name = share_name(image)
    wanted = sorted(set(principals))
    existing = [
        found
        for page in ram.get_paginator("get_resource_shares").paginate(
            resourceOwner="SELF", name=name, resourceShareStatus="ACTIVE"
        )
        for found in page["resourceShares"]
        if found["name"] == name and found["status"] == "ACTIVE"
    ]
    if not existing:
        made = ram.create_resource_share(
            name=name,
            resourceArns=[resource_arn],
            principals=wanted,
            # An account (not an organization) may be outside the organization.
            allowExternalPrincipals=any(not p.startswith("arn:") for p in wanted),
        )
        return Shared(made["resourceShare"]["resourceShareArn"], True, tuple(wanted))
    share_arn = existing[0]["resourceShareArn"]
    if resource_arn not in _associated(ram, share_arn, "RESOURCE"):
        ram.associate_resource_share(resourceShareArn=share_arn, resourceArns=[resource_arn])
    present = _associated(ram, share_arn, "PRINCIPAL")
    added = [principal for principal in wanted if principal not in present]
    removed = sorted(present - set(wanted))
    if added:
        ram.associate_resource_share(resourceShareArn=share_arn, principals=added)
    if removed:
        ram.disassociate_resource_share(resourceShareArn=share_arn, principals=removed)
    return Shared(share_arn, False, tuple(added), tuple(removed))


def _associated(ram: Any, share_arn: str, kind: str) -> set[str]:
    """The principals (PRINCIPAL) or resources (RESOURCE) the share holds."""
    return {
        association["associatedEntity"]
        for page in ram.get_paginator("get_resource_share_associations").paginate(
            associationType=kind, resourceShareArns=[share_arn]
        )
        for association in page["resourceShareAssociations"]
        if association["status"] in _HELD
    }
