"""A rollout's execution: bake the stale images parents first, swap the services below them (at
most N at a time, each under its own lock, with every guarantee of `bake swap`), prove each one,
and report what happened. A failure stops that image's descendants and services; the rest go on.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bake import report as reports
from bake.aws import images
from bake.campaigns import proof, swaps
from bake.campaigns.notify import Notifier, failure_text, summary_text
from bake.campaigns.plan import CampaignPlan, ImageDecision, Planner, Selection, ServiceDecision
from bake.errors import BakeError
from bake.history import History, new_run_id
from bake.records import RunOptions
from bake.report import (
    ImageAction,
    ImageResult,
    Report,
    RolloutResult,
    ServiceAction,
    ServiceResult,
    StageResult,
    TimelineEntry,
)

if TYPE_CHECKING:
    from bake.app import App


@dataclass(frozen=True)
class RolloutOptions:
    selection: Selection
    parallel: int = 1
    proof: bool = True
    dry_run: bool = False
    report_dir: Path | None = None


@dataclass
class Outcome:
    """What a rollout did, as the command prints it and the report keeps it."""

    plan: CampaignPlan
    report: Report
    written: tuple[Path, Path] | None = None

    @property
    def failed(self) -> bool:
        return self.report.result == "failed"


@dataclass
class _Progress:
    """What the parts of one rollout share: its id, its timeline, its notifications."""

    rollout_id: str
    notifier: Notifier
    timeline: list[TimelineEntry] = field(default_factory=list)

    def failed(self, subject: str, error: str) -> None:
        self.notifier.send(failure_text(self.rollout_id, subject, error))

    def add_run(self, history: History, run_id: str, subject: str) -> None:
        """Every stage of one run, as it is recorded in history."""
        record = next((run for run in history.runs(500) if run.run_id == run_id), None)
        if record is None:
            return
        for stage in record.stages:
            if stage.finished is None:
                continue
            self.timeline.append(
                TimelineEntry(
                    subject=subject,
                    stage=stage.name,
                    started=reports.timestamp(_parse(stage.started)),
                    finished=reports.timestamp(_parse(stage.finished)),
                    result=_stage_result(stage.status),
                )
            )

    def add(self, subject: str, stage: str, started: datetime, result: str) -> None:
        self.timeline.append(
            TimelineEntry(
                subject,
                stage,
                reports.timestamp(started),
                reports.timestamp(_now()),
                _stage_result(result),
            )
        )


def execute(app: App, options: RolloutOptions) -> Outcome:
    started = _now()
    rollout_id = new_run_id()
    plan = Planner(app).plan(options.selection)
    notifier = Notifier(app.config.notify, lambda: app.target.cloud, app.console.line)
    if options.dry_run or plan.nothing_to_do:
        result: RolloutResult = "nothing to do" if plan.nothing_to_do else "succeeded"
        report = _report(app, options, rollout_id, started, result, plan, [], [], [])
        if not options.dry_run:
            notifier.send(summary_text(report))
        return _finish(app, options, Outcome(plan, report), write=not options.dry_run)
    progress = _Progress(rollout_id, notifier)
    image_results = _bake_images(app, plan, progress)
    failed_images = {r.name for r in image_results if r.action in ("failed", "skipped")}
    service_results = _swap_services(app, plan, options, failed_images, progress)
    failed = bool(failed_images) or any(
        s.action in ("failed", "skipped") or s.verdict == "failed" for s in service_results
    )
    report = _report(
        app, options, rollout_id, started, "failed" if failed else "succeeded", plan,
        image_results, service_results, progress.timeline,
    )  # fmt: skip
    notifier.send(summary_text(report))
    return _finish(app, options, Outcome(plan, report), write=True)


def _bake_images(app: App, plan: CampaignPlan, progress: _Progress) -> list[ImageResult]:
    results: list[ImageResult] = []
    broken: dict[str, str] = {}  # image -> why its descendants are skipped
    for decision in plan.images:
        if not decision.stale:
            results.append(_unchanged(decision))
            continue
        if decision.parent in broken:
            why = f"its base {decision.parent} was not baked"
            broken[decision.name] = why
            results.append(_result(decision, "skipped", error=why))
            continue
        run_id = new_run_id()
        app.console.line(f"rollout: baking {decision.name} ({'; '.join(decision.reasons)})")
        try:
            app.run("bake", image=decision.name, options=RunOptions(rebuild=True), run_id=run_id)
        except BakeError as exc:
            broken[decision.name] = exc.message
            results.append(_result(decision, "failed", error=exc.message))
            app.console.line(f"rollout: {decision.name} failed: {exc.message}")
            progress.failed(f"image {decision.name}", exc.message)
        else:
            new_ami = images.published(app.target.cloud, decision.name) or ""
            tags = images.tags_of(images.describe(app.target.cloud, new_ami) or {})
            results.append(
                _result(decision, "baked", new_ami=new_ami, new_kernel=tags.get("bake:kernel", ""))
            )
        progress.add_run(app.history, run_id, f"image {decision.name}")
    return results


def _swap_services(
    app: App,
    plan: CampaignPlan,
    options: RolloutOptions,
    failed_images: set[str],
    progress: _Progress,
) -> list[ServiceResult]:
    todo, results = [], {}
    for decision in plan.services:
        if decision.action == "blocked":
            results[decision.name] = ServiceResult(
                decision.name, decision.image, "failed", old_ami=decision.live_ami or "",
                error=decision.reason, verdict="not proven",
            )  # fmt: skip
        elif decision.image in failed_images:
            results[decision.name] = ServiceResult(
                decision.name, decision.image, "skipped", old_ami=decision.live_ami or "",
                error=f"image {decision.image} was not baked", verdict="not proven",
            )  # fmt: skip
        elif decision.action == "up to date":
            results[decision.name] = _prove(app, decision, options, progress, "up to date")
        else:
            todo.append(decision)
    # closing(): an exception here (a stop signal during a proof) stops the swaps still running.
    with closing(swaps.run_all(app, todo, options.parallel, options.report_dir)) as finishing:
        for finished in finishing:
            results[finished.decision.name] = _after_swap(app, finished, options, progress)
    return [results[decision.name] for decision in plan.services]


def _after_swap(
    app: App, finished: swaps.Finished, options: RolloutOptions, progress: _Progress
) -> ServiceResult:
    """Record a finished `bake swap`, then prove the service when it succeeded."""
    decision = finished.decision
    if finished.run_id:
        progress.add_run(app.history, finished.run_id, f"service {decision.name}")
    if not finished.ok:
        app.console.line(f"rollout: {decision.name} failed: {finished.error}")
        progress.failed(f"service {decision.name}", finished.error)
        return ServiceResult(
            decision.name, decision.image, "failed", old_ami=decision.live_ami or "",
            error=finished.error, verdict="not proven",
        )  # fmt: skip
    result = _prove(app, decision, options, progress, "swapped")
    if result.verdict == "failed":
        failures = [f"{p.instance_id}: {p.verdict}" for p in result.instances if not p.ok]
        progress.failed(f"proof of {decision.name}", "; ".join(failures) or result.error)
    app.console.line(f"rollout: {decision.name} swapped to {result.new_ami}: {result.verdict}")
    return result


def _prove(
    app: App,
    decision: ServiceDecision,
    options: RolloutOptions,
    progress: _Progress,
    action: ServiceAction,
) -> ServiceResult:
    service = app.config.services[decision.name]
    published = images.published(app.target.cloud, decision.image) or ""
    if not options.proof:
        return ServiceResult(
            decision.name, decision.image, action, old_ami=decision.live_ami or "",
            new_ami=published, verdict="not proven",
        )  # fmt: skip
    started = _now()
    try:
        color, proofs = proof.prove(app.target, service, options.selection.require_kernel)
    except BakeError as exc:
        progress.add(f"service {decision.name}", "proof", started, "failed")
        return ServiceResult(
            decision.name, decision.image, action, old_ami=decision.live_ami or "",
            new_ami=published, error=f"proof: {exc.message}", verdict="failed",
        )  # fmt: skip
    proven = bool(proofs) and all(p.ok for p in proofs)
    progress.add(f"service {decision.name}", "proof", started, "done" if proven else "failed")
    return ServiceResult(
        decision.name, decision.image, action, old_ami=decision.live_ami or "",
        new_ami=published, live_color=color, instances=proofs,
        verdict="proven" if proven else "failed",
        error="" if proofs else "no InService instance to prove",
    )  # fmt: skip


def _unchanged(decision: ImageDecision) -> ImageResult:
    return _result(decision, "up to date")


def _result(decision: ImageDecision, action: ImageAction, **fields: Any) -> ImageResult:
    return ImageResult(
        name=decision.name,
        action=action,
        reasons=list(decision.reasons),
        old_ami=decision.published or "",
        old_kernel=decision.kernel,
        updates=list(decision.updates),
        **fields,
    )


def _report(
    app: App,
    options: RolloutOptions,
    rollout_id: str,
    started: datetime,
    result: RolloutResult,
    plan: CampaignPlan,
    image_results: list[ImageResult],
    service_results: list[ServiceResult],
    timeline: list[TimelineEntry],
) -> Report:
    if not image_results:
        image_results = [_unchanged(d) for d in plan.images]
    selection = options.selection
    return Report(
        rollout_id=rollout_id,
        target=app.target.name,
        started=reports.timestamp(started),
        finished=reports.timestamp(_now()),
        result=result,
        options={
            "images": list(selection.images),
            "services": list(selection.services),
            "all": selection.all,
            "rebuild": list(selection.rebuild),
            "swap_only": selection.swap_only,
            "require_kernel": selection.require_kernel,
            "parallel": options.parallel,
            "proof": options.proof,
            "dry_run": options.dry_run,
        },
        images=image_results,
        services=service_results,
        timeline=sorted(timeline, key=lambda entry: entry.started),
    )


def _finish(app: App, options: RolloutOptions, outcome: Outcome, *, write: bool) -> Outcome:
    if write and options.report_dir is not None:
        outcome.written = reports.write(outcome.report, options.report_dir)
    return outcome


def _stage_result(status: str) -> StageResult:
    if status in ("succeeded", "done"):
        return "done"
    return "skipped" if status == "skipped" else "failed"


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)
