"""What the benchmarks share: this checkout, `bake` run as a user runs it, and an App on the same
config and state directory for what a benchmark times beside it (a plain Packer build)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def bake(
    config: Path, state: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`bake --config CONFIG ARGS` with BAKE_STATE_DIR=STATE, from this checkout."""
    return subprocess.run(
        [sys.executable, "-m", "bake", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "BAKE_STATE_DIR": str(state)},
        cwd=REPO,
        check=check,
    )


def app(config: Path, state: Path) -> Any:
    """The project's App on CONFIG and STATE, quiet."""
    os.environ["BAKE_STATE_DIR"] = str(state)
    sys.path.insert(0, str(REPO))
    from bake.app import App
    from bake.console import Console

    return App(config, console=Console(quiet=True))
