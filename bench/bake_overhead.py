"""Time a local bake with the base disk cached, and the toolkit's overhead over plain Packer.

    .venv/bin/python bench/bake_overhead.py [--config bake.toml] [--service demo] [--state DIR]

1. Warms up: starts the local cloud and builds (or reuses) the base disk; not timed.
2. Runs `bake bake-and-swap SERVICE --rebuild` and reads each stage's time from history.
3. Runs plain `packer build` of the same rendered template with the same variables.
4. Prints the figures: every stage, the build stage against plain Packer, and the whole bake
   (render + prepare + build) against plain Packer.

It boots real machines under QEMU: expect about 10 minutes on 2 cores without KVM.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from common import app as app_for
from common import arguments, bake, packer_missing, timed_packer_build


def plain_packer_build(config: Path, state: Path, image: str) -> float:
    """Time `packer build` of the rendered template, with the variables the toolkit would pass."""
    app = app_for(config, state)
    image_config = app.config.image(image)
    source = app.target.resolve_base(image_config)
    template = app.state.rendered(image, app.target.name)
    with tempfile.TemporaryDirectory(dir=app.state.root / "work") as work:
        variables = {
            **source.variables,
            "source_ami": source.ami,
            "build_digest": "bench",
            "run_id": "bench",
            "manifest_path": f"{work}/manifest.json",
            **app.target.build_variables(Path(work)),
        }
        argv = ["-machine-readable"]
        for name, value in sorted(variables.items()):
            argv += ["-var", f"{name}={value}"]
        return timed_packer_build(app, [*argv, str(template)], Path(work))


def main() -> int:
    args = arguments(__doc__.splitlines()[0], service="demo")
    config, state = args.config, args.state
    if packer_missing():
        return 2

    was_running = json.loads(bake(config, state, "--json", "local", "status").stdout)["running"]
    started = time.monotonic()
    bake(config, state, "local", "up")
    print(f"warm-up (local cloud, base disk cached or built): {time.monotonic() - started:.1f}s")

    started = time.monotonic()
    result = json.loads(
        bake(config, state, "--json", "bake-and-swap", args.service, "--rebuild").stdout
    )
    total = time.monotonic() - started
    runs = json.loads(bake(config, state, "--json", "history", "--limit", "5").stdout)
    run = next(run for run in runs if run["run_id"] == result["run_id"])
    stages = {stage["name"]: stage["seconds"] or 0.0 for stage in run["stages"]}
    status = json.loads(bake(config, state, "--json", "status", args.service).stdout)
    image = status["image"]["image"]

    packer_seconds = plain_packer_build(config, state, image)
    bake_seconds = stages["render"] + stages["prepare"] + stages["build"]

    print(
        f"\nbake-and-swap {args.service} --rebuild: {total:.1f}s wall clock (run {run['run_id']})"
    )
    for name, seconds in stages.items():
        print(f"  {name:<16} {seconds:8.1f}s")
    print(f"\nplain packer build of the same template: {packer_seconds:8.1f}s")
    print(
        f"build stage:                              {stages['build']:8.1f}s "
        f"(overhead {stages['build'] - packer_seconds:+.1f}s, "
        f"{(stages['build'] / packer_seconds - 1) * 100:+.1f}%)"
    )
    print(
        f"render + prepare + build:                 {bake_seconds:8.1f}s "
        f"(overhead {bake_seconds - packer_seconds:+.1f}s, "
        f"{(bake_seconds / packer_seconds - 1) * 100:+.1f}%)"
    )
    print("verify, register and the swap are work plain Packer does not do; they are listed above.")
    if not was_running:
        bake(config, state, "local", "down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
