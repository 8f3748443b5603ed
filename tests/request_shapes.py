"""Requests checked as AWS checks them, and the fullest answers AWS can give, from botocore's model.

moto is more lenient than AWS: it ignores members it does not know, and takes any string for an
enum. `problems` is botocore's own client-side validation (unknown and missing members, types,
minimum lengths) plus what AWS checks on its side: enum values, maximum lengths and sizes, numeric
ranges and patterns. `fullest` builds, from a response shape, an answer with every member set, as
AWS may send it (moto never returns most of them), to test what the pipeline sends back.
"""

from __future__ import annotations

import re
from typing import Any

from botocore.model import Shape
from botocore.validate import ParamValidator


def problems(shape: Shape, params: Any) -> list[str]:
    """Everything AWS would reject in `params` for `shape`; empty when it takes them."""
    found: list[str] = []
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        found.extend(line for line in report.generate_report().splitlines() if line.strip())
    _limits(shape, params, "", found)
    return found


def _limits(shape: Shape, value: Any, path: str, found: list[str]) -> None:
    kind, meta = shape.type_name, shape.metadata
    if kind == "structure" and isinstance(value, dict):
        members = shape.members
        for key, item in value.items():
            if key in members:
                _limits(members[key], item, f"{path}.{key}", found)
        return
    if kind == "list" and isinstance(value, list):
        _bounded(len(value), meta, f"{path}: {len(value)} items", found)
        for number, item in enumerate(value):
            _limits(shape.member, item, f"{path}[{number}]", found)
        return
    if kind == "map" and isinstance(value, dict):
        for key, item in value.items():
            _limits(shape.value, item, f"{path}.{key}", found)
        return
    if kind == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            found.append(f"{path}: {value!r} is not one of {shape.enum}")
        _bounded(len(value), meta, f"{path}: length {len(value)}", found)
        pattern = meta.get("pattern")
        if pattern and _compiled(pattern) and not _compiled(pattern).fullmatch(value):
            found.append(f"{path}: {value!r} does not match {pattern}")
        return
    if kind in ("integer", "long", "float", "double") and isinstance(value, int | float):
        _bounded(value, meta, f"{path}: {value}", found)


def _bounded(size: float, meta: dict[str, Any], what: str, found: list[str]) -> None:
    if "min" in meta and size < meta["min"]:
        found.append(f"{what} is below the minimum {meta['min']}")
    if "max" in meta and size > meta["max"]:
        found.append(f"{what} is above the maximum {meta['max']}")


_PATTERNS: dict[str, re.Pattern[str] | None] = {}


def _compiled(pattern: str) -> re.Pattern[str] | None:
    """The pattern as Python reads it; None for the few written in a dialect Python does not."""
    if pattern not in _PATTERNS:
        try:
            _PATTERNS[pattern] = re.compile(pattern)
        except re.error:
            _PATTERNS[pattern] = None
    return _PATTERNS[pattern]


def fullest(shape: Shape, within: frozenset[str] = frozenset()) -> Any:
    """A value of `shape` with every member given, each list one item long (a shape within
    itself, as in a recursive model, is left empty the second time)."""
    kind, meta = shape.type_name, shape.metadata
    inner = within | {shape.name}
    if kind == "structure":
        if shape.name in within:
            return {}
        members = shape.members
        return {key: fullest(member, inner) for key, member in members.items()}
    if kind == "list":
        return [fullest(shape.member, inner)]
    if kind == "map":
        return {"key": fullest(shape.value, inner)}
    if kind == "string":
        return shape.enum[0] if shape.enum else "x" * max(int(meta.get("min", 1)), 1)
    if kind in ("integer", "long"):
        return max(int(meta.get("min", 1)), 1)
    if kind in ("float", "double"):
        return float(max(meta.get("min", 1), 1))
    if kind == "boolean":
        return True
    if kind == "timestamp":
        return "2026-01-01T00:00:00Z"
    if kind == "blob":
        return b"x"
    raise AssertionError(f"no value for a {kind} shape")
