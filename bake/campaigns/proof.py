"""Proof per instance: after a swap, every InService instance of the live colour says what kernel it
runs, which build its disk came from and which release it installed at boot; they are compared
with its AMI's tags and the release its launch template version names.

The instances are asked by the target (over SSH on the local target's machines, over SSM Run
Command on AWS); what they answer is read here, the same way for both.
"""

from __future__ import annotations

import json
import re

from debian.debian_support import version_compare

from bake import bluegreen
from bake.aws import images
from bake.config import ServiceConfig
from bake.report import InstanceProof
from bake.targets.base import Target

# What an instance runs: `uname -r`, `uname -v`, its lineage record, and after a marker line the
# record of the release its pull-deploy installed (nothing on an image without one).
RELEASE_MARKER = "--- release"
COMMAND = (
    f"uname -r; uname -v; cat /etc/bake/lineage.json; echo; echo '{RELEASE_MARKER}'; "
    "cat /run/bake/release.json 2>/dev/null || true"
)
# `uname -v` on Debian: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)".
DEBIAN_VERSION = re.compile(r"Debian (\S+)")


def read_answer(text: str) -> tuple[str, str, str, str]:
    """(kernel release, kernel package version, lineage digest, installed release) from the
    answer to COMMAND."""
    lines = text.strip().splitlines()
    if len(lines) < 3:
        return ("", "", "", "")
    release = lines[0].strip()
    found = DEBIAN_VERSION.search(lines[1])
    rest = lines[2:]
    marker = rest.index(RELEASE_MARKER) if RELEASE_MARKER in rest else len(rest)
    return (
        release,
        found[1] if found else "",
        _field("\n".join(rest[:marker]), "digest"),
        _field("\n".join(rest[marker + 1 :]), "release"),
    )


def _field(text: str, name: str) -> str:
    """A field of a JSON record as text ("" when absent, null or unreadable)."""
    try:
        value = json.loads(text).get(name) if text.strip() else None
    except (ValueError, AttributeError):
        return ""
    return str(value) if value is not None else ""


def verdict(
    kernel: str,
    kernel_version: str,
    digest: str,
    expected_kernel: str,
    expected_digest: str,
    require_kernel: str | None,
    release: str = "",
    expected_release: str = "",
) -> str:
    """ "ok", or what is wrong, in a few words."""
    problems = []
    if kernel and release != expected_release:
        problems.append(f"release {release or 'none'}, expected {expected_release or 'none'}")
    if not kernel:
        problems.append("no answer")
    elif expected_kernel and kernel != expected_kernel:
        problems.append(f"kernel {kernel}, expected {expected_kernel}")
    if kernel and digest != expected_digest:
        problems.append(f"digest {digest[:12] or 'missing'}, expected {expected_digest[:12]}")
    if require_kernel and kernel:
        if not kernel_version:
            problems.append(f"kernel version unknown, {require_kernel} required")
        elif version_compare(kernel_version, require_kernel) < 0:
            problems.append(f"kernel {kernel_version} older than {require_kernel}")
    return "; ".join(problems) or "ok"


def prove(
    target: Target, service: ServiceConfig, require_kernel: str | None = None
) -> tuple[str, list[InstanceProof]]:
    """Ask every InService instance of the service's live colour; (live colour, proofs)."""
    state = bluegreen.describe(target.cloud, service)
    live = state.live
    if live is None or not live.ami or not live.asg:
        return "", []
    tags = images.tags_of(images.describe(target.cloud, live.ami) or {})
    expected_kernel, expected_digest = tags.get("bake:kernel", ""), tags.get("bake:digest", "")
    if expected_kernel == "unknown":
        expected_kernel = ""
    instances = target.in_service_instances(live.asg)
    answers = target.ask_instances(instances, COMMAND)
    proofs = []
    for instance in instances:
        text, error = answers.get(instance, ("", "no answer"))
        kernel, kernel_version, digest, release = read_answer(text)
        said = verdict(
            kernel,
            kernel_version,
            digest,
            expected_kernel,
            expected_digest,
            require_kernel,
            release,
            live.release or "",
        )
        detail = error if error and not kernel else ""
        proofs.append(
            InstanceProof(
                instance_id=instance,
                color=live.color,
                kernel=kernel,
                kernel_version=kernel_version,
                digest=digest,
                expected_kernel=expected_kernel,
                expected_digest=expected_digest,
                verdict=said,
                detail=detail,
                release=release,
                expected_release=live.release or "",
            )
        )
    return live.color, proofs
