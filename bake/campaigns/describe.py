"""How `bake rollout` prints what it planned and did: a short text, or JSON with the plan and the
report."""

from __future__ import annotations

from typing import Any

from bake.campaigns.run import Outcome


def as_dict(outcome: Outcome) -> dict[str, Any]:
    return {
        "result": outcome.report.result,
        "plan": outcome.plan.to_dict(),
        "report": outcome.report.to_dict(),
        "written": [str(path) for path in outcome.written or ()],
    }


def as_text(outcome: Outcome) -> str:
    report = outcome.report
    if report.result == "nothing to do":
        return outcome.plan.describe()
    if report.options.get("dry_run"):
        return "plan (nothing changed):\n" + outcome.plan.describe()
    lines = [f"rollout {report.rollout_id}: {report.result}"]
    for image in report.images:
        change = f"{image.old_ami or '-'} -> {image.new_ami}" if image.new_ami else ""
        why = image.error or "; ".join(image.reasons)
        lines.append(f"  image {image.name:<12} {image.action:<10} {change} {why}".rstrip())
    for service in report.services:
        shown = f"{service.old_ami or '-'} -> {service.new_ami}" if service.new_ami else ""
        lines.append(
            f"  service {service.name:<10} {service.action:<10} {shown} {service.verdict}"
            + (f": {service.error}" if service.error else "")
        )
        for instance in service.instances:
            lines.append(
                f"    {instance.instance_id} {instance.color} {instance.kernel} "
                f"{instance.digest[:12]} {instance.verdict}"
            )
    if outcome.written:
        lines.append(f"  report: {outcome.written[1]}")
    return "\n".join(lines)


def where(outcome: Outcome) -> str:
    return f" and {outcome.written[0]}" if outcome.written else ""
