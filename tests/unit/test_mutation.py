"""The mutant generator of tests/mutation.py, on a small snippet (no pytest runs inside)."""

from __future__ import annotations

import ast
import textwrap

from tests.mutation import Mutant, generate

SNIPPET = textwrap.dedent(
    '''\
    """Module docstring: "a" < "b" and 1 + 1."""
    from __future__ import annotations

    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        LIMIT = 3


    def pick(items: list[int], limit: int = 0) -> int | None:
        """Docstring with 1 < 2 in it."""
        ctx.console.line(f"    picking from {len(items)} items, 1 + 1")
        log.debug("limit %d", limit + 1)
        if not items:
            return None
        best = max(items)
        if best >= limit and best in items:
            save(best)
            return best + 1
        if best is None or limit:
            raise ValueError("no best")
        return sorted(items, reverse=True)[0]


    class Thing:
        def __repr__(self) -> str:
            return f"Thing({1 + 2})"
    '''
)


def _mutants() -> list[Mutant]:
    return generate(SNIPPET, "snippet.py")


def _described() -> set[str]:
    return {mutant.describe() for mutant in _mutants()}


def test_each_operator_makes_its_mutant() -> None:
    described = _described()
    expected = {
        "snippet.py:10: 0 -> 1",
        "snippet.py:14: not items -> items",
        "snippet.py:16: max(items) -> min(items)",
        "snippet.py:17: best >= limit -> best > limit",
        "snippet.py:17: best in items -> best not in items",
        "snippet.py:17: best >= limit and best in items -> best >= limit or best in items",
        "snippet.py:17: best >= limit and best in items -> not (best >= limit and best in items)",
        "snippet.py:18: save(best) -> pass",
        "snippet.py:19: return best + 1 -> return None",
        "snippet.py:19: best + 1 -> best - 1",
        "snippet.py:19: 1 -> 0",
        "snippet.py:20: best is None -> best is not None",
        "snippet.py:21: raise ValueError('no best') -> pass",
        "snippet.py:22: True -> False",
        "snippet.py:22: 0 -> 1",
    }
    assert expected <= described, sorted(expected - described)


def test_docstrings_progress_lines_annotations_and_repr_make_no_mutant() -> None:
    lines = {mutant.line for mutant in _mutants()}
    # 1 and 11: docstrings; 12: a console line; 13: debug logging; 6-7: TYPE_CHECKING;
    # 27: __repr__. Line 10 has only the default value's mutant, not the annotations'.
    assert lines.isdisjoint({1, 6, 7, 11, 12, 13, 27})
    assert [m.mutant for m in _mutants() if m.line == 10] == ["1"]


def test_no_redundant_negation_of_a_not_or_a_plain_equality() -> None:
    negated = [m for m in _mutants() if m.operator == "negate condition"]
    assert [m.line for m in negated] == [17, 20]


def test_applying_a_mutant_changes_only_its_span() -> None:
    original = ast.dump(ast.parse(SNIPPET))
    for mutant in _mutants():
        mutated = mutant.apply(SNIPPET)
        assert mutated[: mutant.start] == SNIPPET[: mutant.start]
        assert mutated[mutant.start + len(mutant.text) :] == SNIPPET[mutant.end :]
        assert ast.dump(ast.parse(mutated)) != original, mutant.describe()


def test_an_operator_swap_rewrites_only_the_operator() -> None:
    (mutant,) = [m for m in _mutants() if m.mutant == "best > limit"]
    line = mutant.apply(SNIPPET).splitlines()[16]
    assert line == "    if best > limit and best in items:"
    assert mutant.text == ">"


def test_a_dropped_not_keeps_precedence() -> None:
    source = "def f(a, b, c):\n    return a and not (b or c)\n"
    (mutant,) = [m for m in generate(source) if m.operator == "drop not"]
    assert mutant.apply(source).splitlines()[1] == "    return a and (b or c)"
