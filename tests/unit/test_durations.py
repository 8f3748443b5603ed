"""Durations in bake.toml (`Seconds`): 90, "90s", "10m", "1h", with whitespace, up to a week."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from bake.config import from_dict
from bake.errors import ConfigError
from bake.settings import MAX_SECONDS, Seconds

# No example database written into the work tree (tests/conftest.py sets no deadline).
properties = settings(database=None, max_examples=300)

seconds = TypeAdapter(Seconds)
FACTORS = {"s": 1, "m": 60, "h": 3600}
# Whitespace as Python means it (str.isspace), so a pasted no-break space is tolerated too.
SPACE = st.text(alphabet=" \t\n\r\xa0\u2003\u3000", max_size=3)
NOT_A_DURATION = 'is not a duration (write 90, "90s", "10m" or "1h")'
TOO_LONG = "is too long (at most 7 days)"
# Near misses are likelier from these than from any character at all.
NEAR = st.text(alphabet=st.sampled_from("0123456789smhdSM .,+-_\t\n\xa0\u0663") | st.characters())


def is_duration(text: str) -> bool:
    """The grammar as the issue states it, written here rather than taken from bake.settings: ASCII
    digits, then maybe whitespace and a unit, with whitespace around."""
    body = text.strip()
    unit = body[-1:] if body[-1:] in ("s", "m", "h") else ""
    number = body.removesuffix(unit).rstrip()
    return bool(number) and all(char in "0123456789" for char in number)


def message(value: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        seconds.validate_python(value)
    (error,) = raised.value.errors()
    return error["msg"].removeprefix("Value error, ")


@properties
@given(
    st.integers(min_value=0, max_value=10**30),
    st.sampled_from(sorted(FACTORS)),
    st.integers(min_value=0, max_value=3),
    SPACE,
    SPACE,
    SPACE,
)
def test_a_number_and_a_unit_give_seconds(
    n: int, unit: str, zeros: int, before: str, between: str, after: str
) -> None:
    text = f"{before}{'0' * zeros}{n}{between}{unit}{after}"
    total = n * FACTORS[unit]
    if total == 0:
        assert message(text) == "Input should be greater than 0"
    elif total <= MAX_SECONDS:
        assert seconds.validate_python(text) == total
    else:
        assert message(text).endswith(f" {TOO_LONG}")
        assert "\n" not in message(text)


@properties
@given(st.integers(min_value=-(10**30), max_value=10**30), SPACE, SPACE)
def test_a_plain_number_is_seconds(n: int, before: str, after: str) -> None:
    for value in (n, f"{before}{n}{after}"):
        if 0 < n <= MAX_SECONDS:
            assert seconds.validate_python(value) == n
        elif n > MAX_SECONDS:
            assert TOO_LONG in message(value)
        elif isinstance(value, int) or n == 0:
            assert message(value) == "Input should be greater than 0"
        else:
            assert message(value) == f"{value!r} {NOT_A_DURATION}", "a sign is not a duration"


@properties
@given(NEAR.filter(lambda text: len(text) <= 40 and not is_duration(text)))
def test_anything_else_is_one_line_saying_so(text: str) -> None:
    assert message(text) == f"{text!r} {NOT_A_DURATION}"
    assert "\n" not in message(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("168h", 7 * 24 * 3600),
        ("10080m", 7 * 24 * 3600),
        ("0090s", 90),
        (" 10 m\n", 600),
        (2.0, 2),
    ],
)
def test_examples_that_are_durations(value: Any, expected: int) -> None:
    assert seconds.validate_python(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("169h", f"'169h' {TOO_LONG}"),
        (MAX_SECONDS + 1, f"{MAX_SECONDS + 1} seconds {TOO_LONG}"),
        (1e20, f"1e+20 seconds {TOO_LONG}"),
        (float("inf"), f"inf seconds {TOO_LONG}"),
        # Past Python's limit on converting long digit strings to int: still the plain message.
        ("9" * 5000 + "s", f"'{'9' * 40}...' {TOO_LONG}"),
        ("\u0663m", f"'\u0663m' {NOT_A_DURATION}"),  # ARABIC-INDIC DIGIT THREE, not an ASCII digit
        ("1d", f"'1d' {NOT_A_DURATION}"),
        ("1.5h", f"'1.5h' {NOT_A_DURATION}"),
        ("10 minutes", f"'10 minutes' {NOT_A_DURATION}"),
        (True, f"true {NOT_A_DURATION}"),
        (1.5, "Input should be a valid integer, got a number with a fractional part"),
    ],
)
def test_examples_that_are_not(value: Any, expected: str) -> None:
    assert message(value) == expected


def raw_config(tmp_path: Path) -> dict[str, Any]:
    """A valid bake.toml as a dict, with every table that has a duration."""
    (tmp_path / "serverspec_tests" / "base").mkdir(parents=True, exist_ok=True)
    return {
        "target": "local",
        "state_dir": str(tmp_path / ".bake"),
        "local": {"boot_timeout": "5m"},
        "images": {
            "base": {
                "base": "debian:bookworm",
                "steps": ["patch"],
                "verify": ["serverspec_tests/base"],
                "build_timeout": "2h",
                "verify_timeout": "30m",
            }
        },
        "services": {
            "demo": {
                "image": "base",
                "capacity": 2,
                "health_timeout": "10m",
                "shift_interval": "30s",
            }
        },
    }


@pytest.mark.parametrize(
    "key",
    [
        "services.demo.health_timeout",
        "services.demo.shift_interval",
        "images.base.build_timeout",
        "images.base.verify_timeout",
        "local.boot_timeout",
    ],
)
def test_a_billion_hours_is_one_clear_line_at_load(tmp_path: Path, key: str) -> None:
    raw = raw_config(tmp_path)
    assert from_dict(raw, tmp_path / "bake.toml"), "the config is valid before the change"
    *tables, name = key.split(".")
    table = raw
    for part in tables:
        table = table[part]
    table[name] = "1000000000h"
    with pytest.raises(ConfigError) as raised:
        from_dict(raw, tmp_path / "bake.toml")
    assert raised.value.exit_code == 2
    assert raised.value.format_message() == (
        f"{tmp_path / 'bake.toml'}: {key}: '1000000000h' is too long (at most 7 days)"
    )
