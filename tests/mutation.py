"""A small mutation tester: `python -m tests.mutation [--jobs N] [PATH ...]` (`make mutation`).

Mutants come from the AST of each module under PATH; each one rewrites only the source text of
its node's span (or of the operator between two operands). The fast suite runs once under
coverage with per-test contexts; each mutant then runs only the tests that executed its lines,
in a private copy of the work tree, so the repository itself is never touched. The result is a
report (stdout and .bake-mutation/report.json), not a gate: the exit status is 0 unless the
baseline suite fails.

This module is also the pytest plugin (`-p tests.mutation`) that each run loads: it checks that
`bake` is imported from the copy and records every test's duration.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / ".bake-mutation" / "report.json"
JOURNAL = REPO / ".bake-mutation" / "journal.jsonl"
MARKERS = "not vm"
PYTEST_FLAGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "tests.mutation", "-m", MARKERS]
MIN_TIMEOUT = 60.0
TIMEOUT_FACTOR = 10.0
COPY_ENV = "BAKE_MUTATION_COPY"
DURATIONS_ENV = "BAKE_MUTATION_DURATIONS"

PROGRESS_SUFFIXES = (".line", ".status", ".stage_started", ".stage_finished", "console_line")
LOG_CALLS = ("log.debug", "logger.debug")
TEXT_CALLS = ("str", "join", "strftime", "format", "hexdigest", "token_hex")
COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
# A single comparison with one of these is negated exactly by its swap: no separate negation.
SELF_NEGATING = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)
OP_TEXT: dict[type[ast.AST], str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.And: "and",
    ast.Or: "or",
    ast.Add: "+",
    ast.Sub: "-",
}
OP_PATTERN: dict[type[ast.AST], str] = {
    ast.Lt: r"<(?!=)",
    ast.LtE: r"<=",
    ast.Gt: r">(?!=)",
    ast.GtE: r">=",
    ast.Eq: r"==",
    ast.NotEq: r"!=",
    ast.In: r"\bin\b",
    ast.NotIn: r"\bnot\s+in\b",
    ast.Is: r"\bis\b(?!\s+not\b)",
    ast.IsNot: r"\bis\s+not\b",
    ast.And: r"\band\b",
    ast.Or: r"\bor\b",
    ast.Add: r"\+(?!=)",
    ast.Sub: r"-(?!=)",
}


# ---------------------------------------------------------------------------------------------
# Mutant generation


@dataclass(frozen=True)
class Mutant:
    """One change to one module: the text in [start, end) (character offsets) becomes `text`."""

    path: str
    line: int
    end_line: int
    start: int
    end: int
    text: str
    operator: str
    original: str
    mutant: str
    in_function: bool = True
    key: str = ""  # the module's content, the span and the text: what --resume matches on

    def apply(self, source: str) -> str:
        """The module's source with this mutant applied."""
        return source[: self.start] + self.text + source[self.end :]

    def describe(self) -> str:
        """`path:line: original -> mutant`, one line."""
        return f"{self.path}:{self.line}: {self.original} -> {self.mutant}"


Edit = tuple[int, int, str]


@dataclass
class _Candidate:
    """A mutation before it is turned into text: the node, its mutated copy, the text edits."""

    operator: str
    node: ast.AST
    new_node: ast.AST
    edits: list[Edit]  # character spans and their replacement texts


class _Source:
    """Source text with conversions from AST (line, byte column) positions to offsets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col: int) -> int:
        """Character offset of a (1-based line, UTF-8 byte column) position."""
        line = self.lines[lineno - 1] if lineno <= len(self.lines) else ""
        return self.starts[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        """Character offsets of a node's span."""
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end = self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
        return start, end

    def gap(self, left: ast.AST, right: ast.AST) -> tuple[int, int]:
        """Character offsets between the end of `left` and the start of `right`."""
        start = self.offset(left.end_lineno, left.end_col_offset)  # type: ignore[attr-defined]
        return start, self.offset(right.lineno, right.col_offset)  # type: ignore[attr-defined]


def _dotted(node: ast.AST) -> str:
    """`a.b.c` for a name or attribute chain; `?` for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    return "?"


def is_progress(statement: ast.stmt) -> bool:
    """True for a statement that only prints progress (console lines, debug logging)."""
    if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)):
        return False
    name = _dotted(statement.value.func)
    return name.endswith(PROGRESS_SUFFIXES) or name in LOG_CALLS or name.startswith("logging.")


def _is_docstring(statement: ast.stmt) -> bool:
    """True for a bare string-constant expression statement."""
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _is_type_checking(statement: ast.stmt) -> bool:
    """True for `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`)."""
    return isinstance(statement, ast.If) and _dotted(statement.test).endswith("TYPE_CHECKING")


def _swap_op(source: _Source, left: ast.AST, right: ast.AST, old: type, new: type) -> Edit | None:
    """The edit that replaces operator `old` between `left` and `right` by `new`, or None."""
    start, end = source.gap(left, right)
    match = re.search(OP_PATTERN[old], source.text[start:end])
    if match is None:
        return None
    return (start + match.start(), start + match.end(), OP_TEXT[new])


class _Generator:
    """Walks one module's AST and collects candidate mutations."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.found: list[tuple[_Candidate, bool]] = []
        self.in_function = False

    def add(
        self, operator: str, node: ast.AST, new_node: ast.AST, edits: list[Edit | None]
    ) -> None:
        """Record a candidate unless one of its edits could not be placed."""
        if edits and all(edit is not None for edit in edits):
            placed = [edit for edit in edits if edit is not None]
            self.found.append((_Candidate(operator, node, new_node, placed), self.in_function))

    def whole(self, operator: str, node: ast.AST, new_node: ast.AST) -> None:
        """Replace a node's whole span by the unparsed mutated node."""
        start, end = self.source.span(node)
        self.add(operator, node, new_node, [(start, end, ast.unparse(new_node))])

    def body(self, statements: Sequence[ast.stmt]) -> None:
        """Visit a block, skipping docstrings, progress lines and TYPE_CHECKING blocks."""
        for statement in statements:
            if _is_docstring(statement) or is_progress(statement):
                continue
            if _is_type_checking(statement):
                continue
            self.statement(statement)

    def statement(self, node: ast.stmt) -> None:
        """Mutations of one statement, then of what it contains."""
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self.function(node)
            return
        if isinstance(node, ast.ClassDef):
            for expression in [*node.decorator_list, *node.bases, *node.keywords]:
                self.expression(expression)
            self.body(node.body)
            return
        self.statement_mutations(node)
        for name, value in ast.iter_fields(node):
            if name == "annotation":
                continue
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                self.body(value)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.expression(item)
            elif isinstance(value, ast.AST):
                self.expression(value)

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """A function's decorators and defaults, then its body (not `__repr__`)."""
        if node.name == "__repr__":
            return
        for expression in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if expression is not None:
                self.expression(expression)
        outer, self.in_function = self.in_function, True
        self.body(node.body)
        self.in_function = outer

    def statement_mutations(self, node: ast.stmt) -> None:
        """Statement-level operators: negated conditions, `return None`, removed calls/raises."""
        if isinstance(node, ast.If | ast.While | ast.Assert):
            self.negate(node.test)
        elif isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                self.whole("return None", node, ast.Return(value=ast.Constant(None)))
        elif isinstance(node, ast.Raise) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
        ):
            self.whole("remove statement", node, ast.Pass())
        elif isinstance(node, ast.AugAssign) and type(node.op) in (ast.Add, ast.Sub):
            new_op = ast.Sub if isinstance(node.op, ast.Add) else ast.Add
            new_node = copy.deepcopy(node)
            new_node.op = new_op()
            start, end = self.source.gap(node.target, node.value)
            gap = self.source.text[start:end]
            index = gap.find(OP_TEXT[type(node.op)] + "=")
            edit = (start + index, start + index + 1, OP_TEXT[new_op]) if index >= 0 else None
            self.add("+/-", node, new_node, [edit])

    def negate(self, test: ast.expr) -> None:
        """`if c` -> `if not (c)`, unless another mutant does the same (`not`, `==`, `True`...)."""
        if isinstance(test, ast.Constant) or (
            isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
        ):
            return
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and _self_negating(test.ops[0]):
            return
        new_node = ast.UnaryOp(op=ast.Not(), operand=copy.deepcopy(test))
        start, end = self.source.span(test)
        text = f"not ({self.source.text[start:end]})"
        self.add("negate condition", test, new_node, [(start, end, text)])

    def expression(self, node: ast.AST) -> None:
        """Mutations of an expression and everything inside it (not f-strings, lambdas' args)."""
        if isinstance(node, ast.JoinedStr):
            return
        if isinstance(node, ast.stmt):  # the body of an `except` or a `case`
            self.body([node])
            return
        self.expression_mutations(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.arguments):
                continue
            self.expression(child)

    def expression_mutations(self, node: ast.AST) -> None:
        """Expression-level operators."""
        if isinstance(node, ast.Compare):
            self.compare(node)
        elif isinstance(node, ast.BoolOp):
            self.boolop(node)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            start, end = self.source.span(node.operand)
            text = self.source.text[start:end]
            whole_start, whole_end = self.source.span(node)
            self.add(
                "drop not", node, copy.deepcopy(node.operand), [(whole_start, whole_end, text)]
            )
        elif isinstance(node, ast.IfExp):
            self.negate(node.test)
        elif isinstance(node, ast.Constant):
            self.constant(node)
        elif isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub):
            self.binop(node)
        elif _called_name(node) in ("max", "min"):
            self.max_min(node)  # type: ignore[arg-type]

    def max_min(self, node: ast.Call) -> None:
        """`max(...)` <-> `min(...)`."""
        name = "min" if _called_name(node) == "max" else "max"
        new_node = copy.deepcopy(node)
        new_node.func = ast.Name(id=name, ctx=ast.Load())
        start, end = self.source.span(node.func)
        self.add("max/min", node, new_node, [(start, end, name)])

    def compare(self, node: ast.Compare) -> None:
        """One mutant per comparison operator: `<`<->`<=`, `==`<->`!=`, `in`<->`not in`, ..."""
        operands = [node.left, *node.comparators]
        for index, op in enumerate(node.ops):
            new_op = COMPARE_SWAPS[type(op)]
            new_node = copy.deepcopy(node)
            new_node.ops[index] = new_op()
            left, right = operands[index], operands[index + 1]
            edit = _swap_op(self.source, left, right, type(op), new_op)
            self.add("comparison", node, new_node, [edit])

    def boolop(self, node: ast.BoolOp) -> None:
        """`and` <-> `or` (every operator of the chain)."""
        new_op = ast.Or if isinstance(node.op, ast.And) else ast.And
        new_node = copy.deepcopy(node)
        new_node.op = new_op()
        edits = [
            _swap_op(self.source, left, right, type(node.op), new_op)
            for left, right in zip(node.values, node.values[1:], strict=False)
        ]
        self.add("and/or", node, new_node, edits)

    def binop(self, node: ast.BinOp) -> None:
        """`+` <-> `-`, not for string concatenation."""
        if any(_is_text(side) for side in (node.left, node.right)):
            return
        new_op = ast.Sub if isinstance(node.op, ast.Add) else ast.Add
        new_node = copy.deepcopy(node)
        new_node.op = new_op()
        edit = _swap_op(self.source, node.left, node.right, type(node.op), new_op)
        self.add("+/-", node, new_node, [edit])

    def constant(self, node: ast.Constant) -> None:
        """`True` <-> `False`; integers n -> n + 1, with 0 -> 1 and 1 -> 0."""
        value = node.value
        if isinstance(value, bool):
            self.whole("True/False", node, ast.Constant(not value))
        elif isinstance(value, int):
            self.whole("integer", node, ast.Constant(0 if value == 1 else value + 1))


def _self_negating(op: ast.cmpop) -> bool:
    """True for a comparison whose swap is its exact negation (`==`, `in`, `is` and theirs)."""
    return isinstance(op, SELF_NEGATING)


def _called_name(node: ast.AST) -> str | None:
    """The plain name a call calls (`max` in `max(a, b)`), else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id
    return None


def _is_text(node: ast.AST) -> bool:
    """True for what is plainly a string: a literal, an f-string, `str(...)`, `.join(...)`, ..."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_text(node.left) or _is_text(node.right)
    if isinstance(node, ast.Call):
        return _dotted(node.func).rsplit(".", 1)[-1] in TEXT_CALLS
    return isinstance(node, ast.Constant) and isinstance(node.value, str | bytes)


def _short(text: str, limit: int = 120) -> str:
    """One line, at most `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _expected_dump(tree: ast.Module, candidate: _Candidate) -> str:
    """The dump of `tree` with the candidate's node replaced by its mutated copy."""
    node, new_node = candidate.node, candidate.new_node
    saved_class, saved_fields = node.__class__, dict(node.__dict__)
    node.__class__ = new_node.__class__
    node.__dict__.clear()
    node.__dict__.update(new_node.__dict__)
    try:
        return ast.dump(tree)
    finally:
        node.__class__ = saved_class
        node.__dict__.clear()
        node.__dict__.update(saved_fields)


def _parses_to(text: str, expected: str) -> bool:
    """True when `text` parses to a tree whose dump is `expected`."""
    try:
        return ast.dump(ast.parse(text)) == expected
    except SyntaxError:
        return False


def _finish(
    path: str, source: _Source, tree: ast.Module, candidate: _Candidate, inner: bool
) -> Mutant | None:
    """The candidate as one span edit, or None unless it changes exactly its node."""
    expected = _expected_dump(tree, candidate)
    start = min(edit[0] for edit in candidate.edits)
    end = max(edit[1] for edit in candidate.edits)
    text = source.text[start:end]
    for edit_start, edit_end, replacement in sorted(candidate.edits, reverse=True):
        text = text[: edit_start - start] + replacement + text[edit_end - start :]
    for attempt in (text, f"({text})"):
        mutated = source.text[:start] + attempt + source.text[end:]
        if _parses_to(mutated, expected):
            node = candidate.node
            return Mutant(
                path=path,
                line=node.lineno,  # type: ignore[attr-defined]
                end_line=node.end_lineno,  # type: ignore[attr-defined]
                start=start,
                end=end,
                text=attempt,
                operator=candidate.operator,
                original=_short(ast.unparse(node)),
                mutant=_short(ast.unparse(candidate.new_node)),
                in_function=inner,
            )
    return None


def generate(source_text: str, path: str = "<source>") -> list[Mutant]:
    """Every mutant of one module's source, in source order, without duplicates."""
    tree = ast.parse(source_text)
    source = _Source(source_text)
    digest = hashlib.sha256(source_text.encode()).hexdigest()
    generator = _Generator(source)
    generator.body(tree.body)
    mutants: list[Mutant] = []
    seen: set[tuple[int, int, str]] = set()
    for candidate, inner in generator.found:
        mutant = _finish(path, source, tree, candidate, inner)
        if mutant is not None and (mutant.start, mutant.end, mutant.text) not in seen:
            seen.add((mutant.start, mutant.end, mutant.text))
            key = hashlib.sha256(
                f"{path}:{digest}:{mutant.start}:{mutant.end}:{mutant.text}".encode()
            )
            mutants.append(dataclasses.replace(mutant, key=key.hexdigest()[:20]))
    return sorted(mutants, key=lambda m: (m.start, m.end, m.text))


def module_paths(arguments: Sequence[str]) -> list[Path]:
    """The .py files named, or found under the directories named, relative to the repo."""
    paths: list[Path] = []
    for argument in arguments:
        path = (REPO / argument).resolve()
        found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        paths.extend(item.relative_to(REPO) for item in found if "__pycache__" not in item.parts)
    return list(dict.fromkeys(paths))


# ---------------------------------------------------------------------------------------------
# The pytest plugin (loaded with -p tests.mutation in every run)


def pytest_configure(config: Any) -> None:
    """Refuse to run unless `bake` is imported from the mutation copy named in the environment."""
    expected = os.environ.get(COPY_ENV)
    if not expected:
        return
    import bake

    where = Path(bake.__file__).resolve()
    if not where.is_relative_to(Path(expected).resolve()):
        import pytest

        raise pytest.UsageError(f"bake is imported from {where}, not from the copy {expected}")


def pytest_runtest_logreport(report: Any) -> None:
    """Add each phase's duration to the file named in the environment (one JSON line each)."""
    target = os.environ.get(DURATIONS_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps([report.nodeid, report.duration]) + "\n")


# ---------------------------------------------------------------------------------------------
# The fork server: one per copy, with the slow third-party imports done once; each mutant's
# pytest runs in a forked child, which imports `bake` and the tests afresh from the copy.

PRELOAD = (
    "pytest",
    "boto3",
    "botocore.client",
    "moto.server",
    "moto.ec2.models",
    "moto.elbv2.models",
    "moto.autoscaling.models",
    "moto.ssm.models",
    "moto.iam.models",
    "moto.sts.models",
    "pydantic",
    "click",
    "jinja2",
    "hcl2",
    "testinfra",
)


def serve() -> int:
    """Read `{"args": [...], "timeout": s}` lines on stdin; answer each with pytest's exit code."""
    import importlib

    assert "bake" not in sys.modules, "the fork server must not import bake"
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    assert "bake" not in sys.modules, "a preloaded module imported bake"
    for line in sys.stdin:
        request = json.loads(line)
        print(json.dumps(_run_forked(request["args"], request["timeout"])), flush=True)
    return 0


def _run_forked(args: list[str], timeout: float | None) -> int | None:
    """pytest.main(args) in a forked child; its exit code, or None after a timeout."""
    pid = os.fork()
    if pid == 0:
        _child(args)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if deadline is not None and time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.02)


def _child(args: list[str]) -> None:
    """The forked child: its own process group, no output, pytest, then exit."""
    code = 3
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        import pytest

        code = int(pytest.main(args))
    finally:
        os._exit(code)


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class Baseline:
    """What the coverage run learnt: the tests of each (file, line) and each test's duration."""

    tests_by_line: dict[str, dict[int, set[str]]]
    durations: dict[str, float]
    seconds: float


@dataclass
class Result:
    """One mutant's fate: killed, timeout (counts as killed), survived, not covered, or error
    (pytest could not run the selected tests: counts as not killed)."""

    mutant: Mutant
    status: str
    tests: int = 0
    seconds: float = 0.0


@dataclass
class Workspace:
    """A private copy of the work tree in which mutants are applied one at a time."""

    root: Path
    originals: dict[str, str] = field(default_factory=dict)
    server: subprocess.Popen[str] | None = None

    @classmethod
    def create(cls, parent: Path, name: str) -> Workspace:
        """Copy every file git tracks (plus untracked, unignored ones) into parent/name."""
        root = parent / name
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            check=True,
            capture_output=True,
        ).stdout.decode()
        for relative in filter(None, listing.split("\0")):
            source = REPO / relative
            if source.is_file():
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, root / relative)
        return cls(root)

    def env(self) -> dict[str, str]:
        """The environment of a run: the copy first on PYTHONPATH (children too), no bytecode."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.root), env.get("PYTHONPATH")]))
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env[COPY_ENV] = str(self.root)
        env.pop(DURATIONS_ENV, None)
        return env

    def pytest_args(self, args: Sequence[str]) -> list[str]:
        """pytest's arguments with the copy's pyproject.toml and the copy as rootdir."""
        return ["-c", str(self.root / "pyproject.toml"), "--rootdir", str(self.root), *args]

    def pytest(self, args: Sequence[str], env: dict[str, str]) -> int:
        """Run pytest in the copy as a plain subprocess (the baseline); its exit code."""
        command = [sys.executable, "-m", "pytest", *self.pytest_args(args)]
        return subprocess.run(command, cwd=self.root, env=env, capture_output=True).returncode

    def forked(self, args: Sequence[str], timeout: float) -> int | None:
        """Run pytest in the copy's fork server; its exit code, or None after a timeout."""
        if self.server is None or self.server.poll() is not None:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "tests.mutation", "--serve"],
                cwd=self.root,
                env=self.env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        assert self.server.stdin is not None and self.server.stdout is not None
        request = {"args": self.pytest_args(args), "timeout": timeout}
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        answer = self.server.stdout.readline()
        if not answer:
            raise RuntimeError(f"the fork server in {self.root} died")
        return json.loads(answer)

    def close(self) -> None:
        """Stop the fork server."""
        if self.server is not None and self.server.poll() is None:
            assert self.server.stdin is not None
            self.server.stdin.close()
            self.server.wait(timeout=30)

    def check_import(self) -> None:
        """Assert that `import bake` in this copy's runs resolves to the copy."""
        output = subprocess.run(
            [sys.executable, "-c", "import bake; print(bake.__file__)"],
            cwd=self.root,
            env=self.env(),
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert Path(output).resolve().is_relative_to(self.root.resolve()), output

    def apply(self, mutant: Mutant) -> None:
        """Write the mutated module into the copy."""
        path = self.root / mutant.path
        original = self.originals.setdefault(mutant.path, path.read_text(encoding="utf-8"))
        path.write_text(mutant.apply(original), encoding="utf-8")

    def restore(self, mutant: Mutant) -> None:
        """Put the original module back."""
        (self.root / mutant.path).write_text(self.originals[mutant.path], encoding="utf-8")


def run_baseline(workspace: Workspace, modules: Sequence[Path]) -> Baseline | None:
    """The fast suite under coverage with per-test contexts; None if it fails."""
    import coverage

    data_file = workspace.root / ".mutation-coverage"
    durations_file = workspace.root / ".mutation-durations"
    env = workspace.env() | {"COVERAGE_FILE": str(data_file), DURATIONS_ENV: str(durations_file)}
    args = ["-q", "-p", "no:cacheprovider", "-p", "tests.mutation", "-m", MARKERS]
    args += ["--cov=bake", "--cov-context=test", "--cov-report="]
    started = time.monotonic()
    if workspace.pytest(args, env) != 0:
        return None
    seconds = time.monotonic() - started
    data = coverage.CoverageData(str(data_file))
    data.read()
    tests_by_line: dict[str, dict[int, set[str]]] = {}
    measured = {Path(name).resolve(): name for name in data.measured_files()}
    for module in modules:
        name = measured.get((workspace.root / module).resolve())
        lines: dict[int, set[str]] = {}
        for lineno, contexts in (data.contexts_by_lineno(name) if name else {}).items():
            tests = {context.rsplit("|", 1)[0] for context in contexts if context}
            if tests:
                lines[lineno] = tests
        tests_by_line[str(module)] = lines
    durations: dict[str, float] = {}
    for line in durations_file.read_text(encoding="utf-8").splitlines():
        nodeid, duration = json.loads(line)
        durations[nodeid] = durations.get(nodeid, 0.0) + duration
    return Baseline(tests_by_line, durations, seconds)


def select_tests(baseline: Baseline, mutant: Mutant) -> list[str]:
    """The tests that executed the mutant's lines (any line of the module at import level)."""
    lines = baseline.tests_by_line.get(mutant.path, {})
    if mutant.in_function:
        wanted = range(mutant.line, mutant.end_line + 1)
        tests = set().union(*(lines.get(line, set()) for line in wanted))
    else:
        tests = set().union(*lines.values())
    return sorted(tests, key=lambda test: (baseline.durations.get(test, 0.0), test))


def run_mutant(workspace: Workspace, baseline: Baseline, mutant: Mutant) -> Result:
    """Apply one mutant in the copy and run the tests that cover it."""
    tests = select_tests(baseline, mutant)
    if not tests:
        return Result(mutant, "not covered")
    budget = sum(baseline.durations.get(test, 0.0) for test in tests)
    timeout = max(MIN_TIMEOUT, TIMEOUT_FACTOR * budget)
    started = time.monotonic()
    workspace.apply(mutant)
    try:
        code = workspace.forked([*PYTEST_FLAGS, *tests], timeout)
    except RuntimeError:
        code = 4
    finally:
        workspace.restore(mutant)
    seconds = time.monotonic() - started
    if code is None:
        return Result(mutant, "timeout", len(tests), seconds)
    if code in (4, 5):
        return Result(mutant, "error", len(tests), seconds)
    return Result(mutant, "survived" if code == 0 else "killed", len(tests), seconds)


def run_all(workspaces: list[Workspace], baseline: Baseline, mutants: list[Mutant]) -> list[Result]:
    """Every mutant, spread over the workspaces (one worker thread each)."""
    free: list[Workspace] = list(workspaces)
    lock = threading.Lock()
    done: list[int] = [0]

    def work(mutant: Mutant) -> Result:
        with lock:
            workspace = free.pop()
        try:
            result = run_mutant(workspace, baseline, mutant)
        finally:
            with lock:
                free.append(workspace)
                done[0] += 1
                count = done[0]
                _journal(result)
        if result.status != "not covered":
            print(
                f"[{count}/{len(mutants)}] {result.status:9} {result.seconds:5.1f}s "
                f"{result.tests:3} tests  {mutant.describe()}",
                file=sys.stderr,
                flush=True,
            )
        return result

    with ThreadPoolExecutor(max_workers=len(workspaces)) as pool:
        return list(pool.map(work, mutants))


def _journal(result: Result) -> None:
    """Append one result to the journal that --resume reads."""
    entry = {"key": result.mutant.key, "status": result.status, "tests": result.tests}
    entry |= {"seconds": round(result.seconds, 1), "describe": result.mutant.describe()}
    with JOURNAL.open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


def journaled(mutants: Sequence[Mutant]) -> list[Result]:
    """The results the journal holds for these mutants (same module text, same change)."""
    entries: dict[str, dict[str, Any]] = {}
    if JOURNAL.exists():
        for line in JOURNAL.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            entries[entry["key"]] = entry
    return [
        Result(mutant, entry["status"], entry["tests"], entry["seconds"])
        for mutant in mutants
        if (entry := entries.get(mutant.key)) and entry["status"] != "error"
    ]


# ---------------------------------------------------------------------------------------------
# Report


def summarise(results: Sequence[Result], modules: Sequence[Path]) -> dict[str, Any]:
    """Counts and score per module and in total, and every survivor."""
    per_module = []
    for module in modules:
        mine = [result for result in results if result.mutant.path == str(module)]
        per_module.append({"path": str(module), **_counts(mine)})
    survivors = [
        {**asdict(result.mutant), "status": result.status, "describe": result.mutant.describe()}
        for result in results
        if result.status in ("survived", "not covered", "error")
    ]
    for survivor in survivors:
        for key in ("start", "end", "text", "in_function", "key"):
            survivor.pop(key)
    return {"modules": per_module, "survivors": survivors, "total": _counts(list(results))}


def _counts(results: Sequence[Result]) -> dict[str, Any]:
    """Mutants, killed (timeouts included), survived, not covered, and the score."""
    statuses = [result.status for result in results]
    killed = statuses.count("killed") + statuses.count("timeout")
    score = killed / len(statuses) if statuses else 1.0
    return {
        "mutants": len(statuses),
        "killed": killed,
        "timeouts": statuses.count("timeout"),
        "survived": statuses.count("survived"),
        "not_covered": statuses.count("not covered"),
        "errors": statuses.count("error"),
        "score": round(score, 4),
    }


def render(report: dict[str, Any]) -> Iterator[str]:
    """The report as text lines."""
    header = f"{'module':40} {'mutants':>7} {'killed':>7} {'survived':>8} {'uncov':>6} {'score':>6}"
    yield header
    for row in [*report["modules"], {"path": "TOTAL", **report["total"]}]:
        if row["path"] == "TOTAL":
            yield "-" * len(header)
        yield (
            f"{row['path']:40} {row['mutants']:7} {row['killed']:7} {row['survived']:8} "
            f"{row['not_covered']:6} {row['score']:6.1%}"
        )
    yield ""
    yield f"survivors ({len(report['survivors'])}):"
    for survivor in report["survivors"]:
        note = "" if survivor["status"] == "survived" else f"  [{survivor['status']}]"
        yield f"{survivor['describe']}{note}"
    yield ""
    total = report["total"]
    yield (
        f"total: {total['mutants']} mutants, {total['killed']} killed "
        f"({total['timeouts']} by timeout), {total['survived']} survived, "
        f"{total['not_covered']} not covered, {total['errors']} errors; score {total['score']:.1%}"
    )


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """--jobs N and the paths to mutate."""
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel workers")
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"reuse the results in {JOURNAL.relative_to(REPO)} (of an interrupted run)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", default=["bake"], help="modules or packages to mutate")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate, run and report; 1 only when the baseline suite fails."""
    args = parse_args(argv)
    if args.serve:
        return serve()
    modules = module_paths(args.paths)
    mutants = [
        mutant
        for module in modules
        for mutant in generate((REPO / module).read_text(encoding="utf-8"), str(module))
    ]
    print(f"{len(mutants)} mutants in {len(modules)} modules", file=sys.stderr, flush=True)
    JOURNAL.parent.mkdir(exist_ok=True)
    reused = journaled(mutants) if args.resume else []
    if not args.resume:
        JOURNAL.write_text("", encoding="utf-8")
    done = {result.mutant.key for result in reused}
    todo = [mutant for mutant in mutants if mutant.key not in done]
    if reused:
        print(f"{len(reused)} results reused from {JOURNAL}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bake-mutation-") as parent:
        jobs = max(1, args.jobs)
        workspaces = [Workspace.create(Path(parent), f"w{index}") for index in range(jobs)]
        for workspace in workspaces:
            workspace.check_import()
        started = time.monotonic()
        baseline = run_baseline(workspaces[0], modules)
        if baseline is None:
            print("mutation: the baseline suite fails; fix it first", file=sys.stderr)
            return 1
        print(f"baseline under coverage: {baseline.seconds:.0f}s", file=sys.stderr, flush=True)
        try:
            results = reused + run_all(workspaces, baseline, todo)
        finally:
            for workspace in workspaces:
                workspace.close()
    order = {mutant.key: index for index, mutant in enumerate(mutants)}
    results.sort(key=lambda result: order[result.mutant.key])
    report = summarise(results, modules)
    report["seconds"] = round(time.monotonic() - started)
    REPORT.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for line in render(report):
        print(line)
    print(f"({report['seconds']}s; full report in {REPORT.relative_to(REPO)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
