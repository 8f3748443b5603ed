r"""`templates.hcl(value)` round-trips: written into an HCL2 document and read back, it is `value`.

Read back with python-hcl2 (as `templates.parse` reads rendered templates) for any value it can
read, and with Packer itself for the strings python-hcl2 cannot.

How python-hcl2 8.x gives strings back, with `strip_string_quotes=True`: quotes removed and the
escapes \", \\, \n, \r, \t, \uNNNN and \UNNNNNNNN decoded, but template text kept as written, so
an escaped `$${` comes back as `$${` and `%%{` as `%%{`; `as_value` undoes that, as HCL does.

Where python-hcl2 itself cannot round-trip (its own bug, not ours): its grammar reads an escaped
opener as one raw token up to the next `}` (`ESCAPED_INTERPOLATION: /\$\$\{[^}]*\}/`, and the
same for `%%{`). So (1) a `${` or `%{` with no `}` after it in the string makes the token run past
the closing quote, and the document fails to parse ("Unexpected token $END"), and (2) escapes
between the opener and that `}` are not decoded (`"$${a\"b}"` comes back as `$${a\"b}`). The
strategy leaves out the strings with either shape (`python_hcl2_reads`), and
`test_packer_reads_what_python_hcl2_cannot` checks such strings with Packer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bake import templates
from bake.errors import InputError
from bake.runner import Runner

# No example database in the work tree (tests/conftest.py sets no deadline).
properties = settings(database=None, max_examples=300)

# Characters and pieces that need escaping in HCL, mixed into any other text.
TRICKY = ["${", "%{", "$${", "%%{", "$", "%", "{", "}", '"', "\\", "\n", "\r", "\t", "\b", "\f"]
ODD = ["\x00", "\x1f", "\x7f", "\x85", "\u2028", "\ufeff", "ü", "😀", "𠀋"]
pieces = st.sampled_from(TRICKY + ODD) | st.characters(exclude_categories=["Cs"])
strings = st.lists(pieces, max_size=12).map("".join)

OPENER = re.compile(r"[$%]\{")


def needs_escape(char: str) -> bool:
    return char in '"\\' or ord(char) < 0x20


def python_hcl2_reads(text: str) -> bool:
    """Whether python-hcl2 can give `text` back (see the module docstring): every `${` and `%{`
    is followed by a `}`, with nothing that needs escaping in between."""
    for opener in OPENER.finditer(text):
        rest = text[opener.end() :]
        close = rest.find("}")
        if close < 0 or any(needs_escape(char) for char in rest[:close]):
            return False
    return True


readable = strings.filter(python_hcl2_reads)
values = st.recursive(
    readable | st.integers() | st.booleans(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(readable, inner, max_size=4),
    max_leaves=12,
)


def as_value(parsed: Any) -> Any:
    """What HCL makes of python-hcl2's template text: `$${` is a literal `${`, `%%{` a `%{`."""
    if isinstance(parsed, str):
        return parsed.replace("$${", "${").replace("%%{", "%{")
    if isinstance(parsed, list):
        return [as_value(item) for item in parsed]
    if isinstance(parsed, dict):
        return {as_value(key): as_value(item) for key, item in parsed.items()}
    return parsed


def read_back(literal: str) -> Any:
    document = f"locals {{\n  value = {literal}\n}}\n"
    return as_value(templates.parse(document, Path("t.pkr.hcl"))["locals"][0]["value"])


@properties
@given(values)
def test_python_hcl2_reads_back_the_value(value: Any) -> None:
    assert read_back(templates.hcl(value)) == value


@properties
@given(strings)
def test_a_literal_is_one_line(text: str) -> None:
    """A literal never breaks the line it is written on (templates put one attribute a line)."""
    literal = templates.hcl(text)
    assert "\n" not in literal and "\r" not in literal


@pytest.mark.parametrize(
    "text",
    ["${", "a%{", '${a"b}', "%{a\nb}", "${a\\b}", "$${", "}${"],
)
def test_the_strings_python_hcl2_cannot_read_are_left_out(text: str) -> None:
    """Keeps `python_hcl2_reads` honest: what it leaves out, python-hcl2 really gets wrong."""
    assert not python_hcl2_reads(text)
    try:
        parsed = read_back(templates.hcl(text))
    except InputError:
        return
    assert parsed != text


# The values Packer checks: what python-hcl2 cannot read, and what HCL and JSON escape differently.
FOR_PACKER: list[Any] = [
    "${",
    "a%{",
    '${a"b}',
    "%{a\nb}",
    "\\$${",
    "$$${x}",
    "%%%{y}",
    "back\bspace and form\ffeed",
    "😀 𠀋 ü \x00 \x7f \x85 \u2028 \ufeff",
    'say "hi" ${HOME} %{if x}\t\\n',
    ["${", {"%{": "\n", "key ${x}": [True, 3, -7]}],
    10**30,
]


@pytest.mark.packer
def test_packer_reads_what_python_hcl2_cannot(tmp_path: Path) -> None:
    template = tmp_path / "values.pkr.hcl"
    template.write_text(f"locals {{\n  values = {templates.hcl(FOR_PACKER)}\n}}\n", "utf-8")
    result = Runner().run(
        ["packer", "console", template],
        input="jsonencode(local.values)\n",
        env={"CHECKPOINT_DISABLE": "1"},
        timeout=120,
    )
    assert json.loads(result.stdout) == FOR_PACKER
