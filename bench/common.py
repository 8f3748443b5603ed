"""What the benchmarks share: this checkout, `bake` run as a user runs it, and an App on the same
config and state directory for what a benchmark times beside it (a plain Packer build)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
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


def arguments(description: str, **defaults: str) -> argparse.Namespace:
    """A benchmark's options: --config and --state (resolved), and one per keyword (its default)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=REPO / "bake.toml")
    for name, default in defaults.items():
        parser.add_argument(f"--{name}", default=default)
    parser.add_argument("--state", type=Path, default=REPO / ".bake")
    args = parser.parse_args()
    args.config, args.state = args.config.resolve(), args.state.resolve()
    return args


def packer_missing() -> bool:
    """True (and says so) when packer is not installed."""
    if shutil.which("packer") is None:
        print("packer is not installed: run `make install`", file=sys.stderr)
        return True
    return False


def timed_packer_build(app: Any, argv: list[str], work: Path) -> float:
    """Seconds `packer build` ARGV takes in WORK, quiet, with the environment the toolkit gives."""
    started = time.monotonic()
    subprocess.run(
        ["packer", "build", "-color=false", *argv],
        cwd=work,
        env={**os.environ, "CHECKPOINT_DISABLE": "1", **app.target.packer_environment()},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    return time.monotonic() - started
