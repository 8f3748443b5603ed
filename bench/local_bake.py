"""Local bakes: `bake build IMAGE --rebuild` and `bake verify IMAGE --again` with the base disk
cached, against a plain Packer qemu build of the same base disk running `apt-get update && apt-get
-y dist-upgrade` with Debian's defaults, measured side by side in one run.

    .venv/bin/python bench/local_bake.py [--image base] [--config bake.toml] [--state DIR]

1. Warms up, not timed: the local cloud, the base disk, a build of IMAGE through the host's
   package cache, so that it holds the day's packages (as for every bake after the day's first).
2. Times `bake build IMAGE --rebuild`, then `bake verify IMAGE --again`, each from the command's
   start to its end, and reads the stages' own times from history.
3. Times plain Packer: a template of its own (the qemu builder on the same source disk with the
   same accelerator, memory and cores; Packer's defaults otherwise) with one inline provisioner.
4. Prints the figures, and the issue's targets: build and verify within 120 s, and at most 0.3
   times the plain build.

It boots real machines under QEMU: expect 10 to 15 minutes on 2 cores without KVM.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from common import app as app_for
from common import arguments, bake, packer_missing, timed_packer_build

TARGET_SECONDS = 120.0
TARGET_RATIO = 0.3

PLAIN_TEMPLATE = """\
source "qemu" "plain" {{
  iso_url              = "{disk}"
  iso_checksum         = "sha256:{sha256}"
  disk_image           = true
  skip_resize_disk     = true
  format               = "qcow2"
  accelerator          = "{accelerator}"
  headless             = true
  memory               = {memory}
  cpus                 = {cpus}
  net_device           = "virtio-net"
  disk_interface       = "virtio"
  ssh_username         = "root"
  ssh_private_key_file = "{key}"
  ssh_timeout          = "10m"
  shutdown_command     = "systemctl poweroff"
  output_directory     = "{output}"
  vm_name              = "plain.qcow2"
}}

build {{
  sources = ["source.qemu.plain"]
  provisioner "shell" {{
    # The suites a Debian install has (the base disk has its release alone; the patch step adds
    # the others), then Debian's own update and upgrade, nothing tuned.
    inline = [
      "cd /etc/apt",
      "echo 'deb http://deb.debian.org/debian bookworm main' > sources.list",
      "echo 'deb http://deb.debian.org/debian bookworm-updates main' >> sources.list",
      "echo 'deb http://deb.debian.org/debian-security bookworm-security main' >> sources.list",
      "export DEBIAN_FRONTEND=noninteractive",
      "apt-get update",
      "apt-get -y dist-upgrade",
    ]
  }}
}}
"""


def timed(config: Path, state: Path, *args: str) -> tuple[float, dict]:
    started = time.monotonic()
    result = json.loads(bake(config, state, "--json", *args).stdout)
    return time.monotonic() - started, result


def stages_of(config: Path, state: Path, run_id: str) -> dict[str, float]:
    runs = json.loads(bake(config, state, "--json", "history", "--limit", "10").stdout)
    run = next(run for run in runs if run["run_id"] == run_id)
    return {stage["name"]: stage["seconds"] or 0.0 for stage in run["stages"]}


def plain_packer_build(config: Path, state: Path, image: str) -> float:
    """Time a plain Packer build of IMAGE's source disk: apt-get update && dist-upgrade."""
    app = app_for(config, state)
    source = app.target.resolve_base(app.config.image(image))
    private_key, _ = app.target.keypair  # type: ignore[attr-defined]
    local = app.config.local
    with tempfile.TemporaryDirectory(dir=app.state.root / "work") as work:
        template = Path(work) / "plain.pkr.hcl"
        template.write_text(
            PLAIN_TEMPLATE.format(
                disk=source.variables["source_disk"],
                sha256=source.variables["source_checksum"].removeprefix("sha256:"),
                accelerator=app.target.accelerator,  # type: ignore[attr-defined]
                memory=local.memory,
                cpus=local.cpus,
                key=private_key,
                output=Path(work) / "output",
            ),
            encoding="utf-8",
        )
        return timed_packer_build(app, [str(template)], Path(work))


def main() -> int:
    args = arguments(__doc__.splitlines()[0], image="base")
    config, state = args.config, args.state
    if packer_missing():
        return 2

    started = time.monotonic()
    bake(config, state, "build", args.image)
    if not any((state / "cache" / "packages").rglob("*.deb")):
        bake(config, state, "build", args.image, "--rebuild")  # through the package cache
    bake(config, state, "verify", args.image)
    print(f"warm-up (local cloud, base disk, package cache): {time.monotonic() - started:.1f}s")

    build_seconds, built = timed(config, state, "build", args.image, "--rebuild")
    verify_seconds, verified = timed(config, state, "verify", args.image, "--again")
    plain_seconds = plain_packer_build(config, state, args.image)

    total = build_seconds + verify_seconds
    print(f"\nbake build {args.image} --rebuild:  {build_seconds:7.1f}s")
    for name, seconds in stages_of(config, state, built["run_id"]).items():
        print(f"  {name:<12} {seconds:7.1f}s")
    print(f"bake verify {args.image} --again:   {verify_seconds:7.1f}s")
    for name, seconds in stages_of(config, state, verified["run_id"]).items():
        print(f"  {name:<12} {seconds:7.1f}s")
    print(f"build + verify:                {total:7.1f}s (target {TARGET_SECONDS:.0f}s: ", end="")
    print("met)" if total <= TARGET_SECONDS else f"missed by {total - TARGET_SECONDS:.0f}s)")
    print(f"plain packer build, update && dist-upgrade: {plain_seconds:7.1f}s")
    ratio = total / plain_seconds
    print(
        f"build + verify / plain build: {ratio:.2f} (target {TARGET_RATIO}: "
        + ("met)" if ratio <= TARGET_RATIO else "missed)")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
