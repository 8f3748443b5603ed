"""The nightly examples run `bake rollout` with options that exist; systemd accepts the units."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import yaml

from bake.cli import cli

NIGHTLY = Path(__file__).resolve().parents[2] / "examples" / "nightly"


def rollout_options() -> set[str]:
    command = cli.commands["rollout"]
    return {option for param in command.params for option in getattr(param, "opts", [])}


def options_in(line: str) -> set[str]:
    words = shlex.split(line.replace("\\\n", " "))
    return {
        word.split("=")[0] for word in words[words.index("rollout") + 1 :] if word.startswith("--")
    }


def test_the_systemd_service_runs_a_rollout_the_cli_knows() -> None:
    unit = (NIGHTLY / "goldenbake-nightly.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    inner = shlex.split(exec_start)[-1]

    used = options_in(inner.split("exec ", 1)[1])
    assert used == {"--all", "--parallel", "--report"}
    assert used <= rollout_options()


def test_the_workflow_runs_a_rollout_the_cli_knows_and_keeps_the_report() -> None:
    workflow = yaml.safe_load((NIGHTLY / "github-actions.yml").read_text())
    steps = workflow["jobs"]["rollout"]["steps"]
    (run,) = [step["run"] for step in steps if "bake rollout" in step.get("run", "")]

    used = options_in(run.replace("${REQUIRE_KERNEL:+", "").replace('"$REQUIRE_KERNEL"}', "V"))
    assert used == {"--all", "--parallel", "--report", "--require-kernel"}
    assert used <= rollout_options()
    assert workflow["permissions"]["id-token"] == "write", "the role is assumed through OIDC"
    kept = next(
        step for step in steps if step.get("uses", "").startswith("actions/upload-artifact")
    )
    assert kept["with"]["path"] == "report/" and kept["if"] == "always()"


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    checked = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            str(NIGHTLY / "goldenbake-nightly.service"),
            str(NIGHTLY / "goldenbake-nightly.timer"),
        ],
        capture_output=True,
        text=True,
    )
    problems = [
        line
        for line in checked.stderr.splitlines()
        # The host need not have the checkout the unit runs in.
        if "/opt/goldenbake" not in line
    ]
    assert checked.returncode == 0 or not problems, checked.stderr
    assert problems == []
