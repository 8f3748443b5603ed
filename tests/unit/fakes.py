"""A Runner for unit tests: records every command and answers with canned results.

Rules match a command by its program name (argv[0]) or by a predicate over the argv list; the rule
added last wins, so a test can override a default answer. A rule's `effect` sees the argv (to make
the files a real command would make); `returncodes` answers successive calls in turn.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bake.errors import CommandFailed
from bake.runner import Completed, Runner

Match = str | Callable[[list[str]], bool]


@dataclass
class Rule:
    match: Match
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    effect: Callable[[list[str]], object] | None = None
    raises: BaseException | None = None
    exits: int | None = None
    returncodes: list[int] = field(default_factory=list)

    def next_returncode(self) -> int:
        return self.returncodes.pop(0) if self.returncodes else self.returncode

    def matches(self, argv: list[str]) -> bool:
        if isinstance(self.match, str):
            return argv[0] == self.match
        return self.match(argv)


@dataclass
class FakeProcess:
    """A spawned process that runs until stopped, or has already exited with `returncode`."""

    argv: list[str]
    returncode: int | None = None
    stopped: bool = False
    pid: int = 4242

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.argv, timeout or 0)
        return self.returncode

    def stop(self, grace: float = 10.0) -> int:
        self.stopped = True
        if self.returncode is None:
            self.returncode = -15
        return self.returncode


@dataclass
class FakeRunner(Runner):
    """Records each call's argv in `calls` and the extra environment it passed in `environments`."""

    calls: list[list[str]] = field(default_factory=list)
    environments: list[dict[str, str]] = field(default_factory=list)
    processes: list[FakeProcess] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    real: frozenset[str] = frozenset()
    """Programs that really run (through the product's Runner), recorded like the others; "-m
    NAME" for a Python module run by this interpreter."""

    def _is_real(self, argv: Sequence[object]) -> bool:
        words = [str(a) for a in argv]
        module = words[1:2] == ["-m"] and words[0] == sys.executable and f"-m {words[2]}"
        return words[0] in self.real or (bool(module) and module in self.real)

    def on(self, match: Match, **answer) -> FakeRunner:
        """Answer commands matching `match` (program name or predicate) with `answer`."""
        self.rules.append(Rule(match, **answer))
        return self

    def commands(self, program: str) -> list[list[str]]:
        """Every recorded argv whose program is `program`, in order."""
        return [argv for argv in self.calls if argv[0] == program]

    def _answer(
        self, argv: Sequence[object], env: Mapping[str, str] | None
    ) -> tuple[list[str], Rule, int]:
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        self.environments.append(dict(env or {}))
        rule = next((r for r in reversed(self.rules) if r.matches(argv)), Rule(argv[0]))
        if rule.effect:
            rule.effect(argv)
        if rule.raises:
            raise rule.raises
        return argv, rule, rule.next_returncode()

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        input: str | None = None,
    ) -> Completed:
        if self._is_real(argv):
            self.calls.append([str(a) for a in argv])
            self.environments.append(dict(env or {}))
            return Runner.run(
                self, argv, check=check, timeout=timeout, env=env, cwd=cwd, input=input
            )
        argv, rule, status = self._answer(argv, env)
        result = Completed(argv, status, rule.stdout, rule.stderr, 0.0)
        if check and not result.ok:
            raise CommandFailed(argv, result.returncode, result.stderr or result.stdout)
        return result

    def stream(
        self,
        argv: Sequence[str],
        *,
        on_line: Callable[[str], None],
        log_path: Path | None = None,
        check: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        stop_grace: float = 10.0,
    ) -> Completed:
        if self._is_real(argv):
            self.calls.append([str(a) for a in argv])
            self.environments.append(dict(env or {}))
            return Runner.stream(
                self,
                argv,
                on_line=on_line,
                log_path=log_path,
                check=check,
                timeout=timeout,
                env=env,
                cwd=cwd,
                stop_grace=stop_grace,
            )
        result = self.run(argv, check=False, timeout=timeout, env=env)
        for line in result.stdout.splitlines():
            on_line(line)
        if check and not result.ok:
            raise CommandFailed(result.argv, result.returncode, result.stdout)
        return result

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> FakeProcess:  # type: ignore[override]
        if self._is_real(argv):
            self.calls.append([str(a) for a in argv])
            return Runner.spawn(self, argv, log_path=log_path, env=env, cwd=cwd)  # type: ignore[return-value]
        argv, rule, _status = self._answer(argv, env)
        process = FakeProcess(argv, returncode=rule.exits)
        self.processes.append(process)
        return process
