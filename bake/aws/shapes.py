"""What a describe call returned, made fit to send back in a request.

A response shape often has members its request shape rejects: a launch template version's
`MetadataOptions.State`, `NetworkInterfaces[].Ipv6Addresses[].IsPrimaryIpv6` and
`Operator.Managed`, a lifecycle hook's `AutoScalingGroupName` and `GlobalTimeout`, a target
group's ARN and load balancers. moto never returns most of them, so a request built from described
data passes every test and fails on AWS. The filter is driven by botocore's own model of the
request (the client's service model), not by a hand-kept list, so it follows botocore's updates.
"""

from __future__ import annotations

from typing import Any

from botocore.model import Shape


def request_shape(client: Any, operation: str, member: str | None = None) -> Shape:
    """The input shape of `operation` (its API name, `CreateLaunchTemplateVersion`), or of one of
    its members; a list member gives the shape of its items."""
    shape: Shape = client.meta.service_model.operation_model(operation).input_shape
    if member is None:
        return shape
    shape = shape.members[member]
    return shape.member if shape.type_name == "list" else shape


def fit(value: Any, shape: Shape) -> Any:
    """`value` with every member that `shape` (and the shapes within it) does not take removed."""
    if shape.type_name == "structure" and isinstance(value, dict):
        members = shape.members
        return {key: fit(item, members[key]) for key, item in value.items() if key in members}
    if shape.type_name == "list" and isinstance(value, list):
        return [fit(item, shape.member) for item in value]
    if shape.type_name == "map" and isinstance(value, dict):
        return {key: fit(item, shape.value) for key, item in value.items()}
    return value


def for_request(
    client: Any,
    operation: str,
    described: dict[str, Any],
    *,
    member: str | None = None,
    without: tuple[str, ...] = (),
    drop_empty: bool = False,
) -> dict[str, Any]:
    """The members of `described` that `operation` (or its `member`) takes, less `without`;
    with `drop_empty`, a member whose value is None, an empty table or an empty list is left out
    too (describe calls give those for settings that were never made)."""
    fitted: dict[str, Any] = fit(described, request_shape(client, operation, member))
    return {
        key: value
        for key, value in fitted.items()
        if key not in without and not (drop_empty and value in (None, {}, []))
    }
