"""What a rollout did, as `report.json` and a self-contained `report.html`.

A rollout bakes the stale images and swaps the services onto them; its report says, per image,
why it was stale and what changed, per service, which instances proved the new image is running,
and when each stage ran. The HTML needs no network: its style and its timeline chart are inline.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args

import jinja2

from bake.console import duration
from bake.errors import InputError
from bake.packages import Update

RolloutResult = Literal["succeeded", "failed", "nothing to do"]
ImageAction = Literal["baked", "reused", "up to date", "failed", "skipped"]
ServiceAction = Literal["swapped", "up to date", "failed", "skipped"]
ServiceVerdict = Literal["proven", "failed", "not proven"]
StageResult = Literal["done", "skipped", "failed"]

JSON_NAME = "report.json"
HTML_NAME = "report.html"
# Updates shown in full under an image; more than this fold into a collapsible list.
SHOWN_UPDATES = 8


def timestamp(moment: datetime) -> str:
    """`moment` as the report writes times: ISO-8601 in UTC, `2024-11-05T09:30:00Z`."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.isoformat().replace("+00:00", "Z")


def parse_time(text: str, what: str) -> datetime:
    """An ISO-8601 time of the report as an aware datetime (UTC when it names no zone)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{what}: {text!r} is not an ISO-8601 time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def proof_verdict(kernel: str, digest: str, expected_kernel: str, expected_digest: str) -> str:
    """`ok`, or what an instance runs that it should not: `kernel A, expected B`."""
    wrong = []
    if kernel != expected_kernel:
        wrong.append(f"kernel {kernel or 'unknown'}, expected {expected_kernel}")
    if digest != expected_digest:
        wrong.append(f"digest {digest[:12] or 'unknown'}, expected {expected_digest[:12]}")
    return "; ".join(wrong) or "ok"


def _check(value: str, kind: Any, what: str) -> None:
    allowed = get_args(kind)
    if value not in allowed:
        raise ValueError(f"{what}: {value!r} is not one of {', '.join(allowed)}")


def _text(data: dict[str, Any], name: str, default: str | None = None) -> str:
    """`data[name]` as a string; a clear error when it is missing and has no default."""
    if name in data:
        return str(data[name])
    if default is None:
        raise ValueError(f"no {name!r} in {sorted(data)}")
    return default


@dataclass(frozen=True)
class InstanceProof:
    """What one instance of a service runs, read on it after the swap, against what it should."""

    instance_id: str
    color: str
    kernel: str  # uname -r
    kernel_version: str  # the Debian version of the running kernel, from uname -v
    digest: str  # from /etc/bake/lineage.json
    expected_kernel: str
    expected_digest: str
    verdict: str  # "ok" or a short reason
    detail: str = ""
    release: str = ""  # the release pull-deploy installed at its boot (/run/bake/release.json)
    expected_release: str = ""  # the one its launch template version names

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceProof:
        optional = ("detail", "release", "expected_release")
        return cls(
            **{
                name: _text(data, name) for name in cls.__dataclass_fields__ if name not in optional
            },
            **{name: _text(data, name, "") for name in optional},
        )


@dataclass(frozen=True)
class ImageResult:
    """What the rollout did with one image."""

    name: str
    action: ImageAction
    reasons: list[str] = field(default_factory=list)  # why the image was stale
    old_ami: str = ""
    new_ami: str = ""
    old_kernel: str = ""
    new_kernel: str = ""
    updates: list[Update] = field(default_factory=list)  # applied by the bake
    error: str = ""

    def __post_init__(self) -> None:
        _check(self.action, ImageAction, f"image {self.name} action")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "updates": [update.to_dict() for update in self.updates]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageResult:
        optional = ("old_ami", "new_ami", "old_kernel", "new_kernel", "error")
        return cls(
            name=_text(data, "name"),
            action=cast(ImageAction, _text(data, "action")),  # checked in __post_init__
            **{name: _text(data, name, "") for name in optional},
            reasons=[str(reason) for reason in data.get("reasons", [])],
            updates=[Update.from_dict(update) for update in data.get("updates", [])],
        )


@dataclass(frozen=True)
class ServiceResult:
    """What the rollout did with one service, and the proof read on its instances."""

    name: str
    image: str
    action: ServiceAction
    verdict: ServiceVerdict = "not proven"
    old_ami: str = ""
    new_ami: str = ""
    live_color: str = ""
    error: str = ""
    instances: list[InstanceProof] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(self.action, ServiceAction, f"service {self.name} action")
        _check(self.verdict, ServiceVerdict, f"service {self.name} verdict")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "instances": [proof.to_dict() for proof in self.instances]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceResult:
        optional = ("old_ami", "new_ami", "live_color", "error")
        return cls(
            name=_text(data, "name"),
            image=_text(data, "image"),
            action=cast(ServiceAction, _text(data, "action")),  # checked in __post_init__
            verdict=cast(ServiceVerdict, _text(data, "verdict", "not proven")),
            **{name: _text(data, name, "") for name in optional},
            instances=[InstanceProof.from_dict(proof) for proof in data.get("instances", [])],
        )


@dataclass(frozen=True)
class TimelineEntry:
    """One stage of one subject ("image base", "service demo"), from start to finish."""

    subject: str
    stage: str
    started: str
    finished: str
    result: StageResult

    def __post_init__(self) -> None:
        what = f"timeline {self.subject} {self.stage}"
        _check(self.result, StageResult, f"{what} result")
        if parse_time(self.finished, f"{what} finished") < parse_time(
            self.started, f"{what} started"
        ):
            raise ValueError(f"{what}: finished {self.finished} before it started {self.started}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimelineEntry:
        return cls(
            subject=_text(data, "subject"),
            stage=_text(data, "stage"),
            started=_text(data, "started"),
            finished=_text(data, "finished"),
            result=cast(StageResult, _text(data, "result")),  # checked in __post_init__
        )


@dataclass(frozen=True)
class Report:
    """A whole rollout: its options, images, services and timeline."""

    rollout_id: str
    target: str  # "local" or "aws"
    started: str
    finished: str
    result: RolloutResult
    options: dict[str, Any] = field(default_factory=dict)
    images: list[ImageResult] = field(default_factory=list)
    services: list[ServiceResult] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(self.result, RolloutResult, f"rollout {self.rollout_id} result")
        if self.duration < 0:
            raise ValueError(f"rollout {self.rollout_id} finished before it started")

    @property
    def duration(self) -> float:
        """Seconds from start to finish."""
        started = parse_time(self.started, "rollout started")
        return (parse_time(self.finished, "rollout finished") - started).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "images": [image.to_dict() for image in self.images],
            "services": [service.to_dict() for service in self.services],
            "timeline": [entry.to_dict() for entry in self.timeline],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(
            rollout_id=_text(data, "rollout_id"),
            target=_text(data, "target"),
            started=_text(data, "started"),
            finished=_text(data, "finished"),
            result=cast(RolloutResult, _text(data, "result")),  # checked in __post_init__
            options=dict(data.get("options", {})),
            images=[ImageResult.from_dict(image) for image in data.get("images", [])],
            services=[ServiceResult.from_dict(service) for service in data.get("services", [])],
            timeline=[TimelineEntry.from_dict(entry) for entry in data.get("timeline", [])],
        )


def read(path: Path) -> Report:
    """The report in `path` (a `report.json`); a clear error when it is not one."""
    try:
        return Report.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise InputError(f"cannot read the report {path}: {exc.strerror}") from exc
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"{path} is not a rollout report: {exc}") from exc


def write(report: Report, directory: Path) -> tuple[Path, Path]:
    """Write `report.json` and `report.html` into `directory` (made if missing); each file is
    replaced whole, so a reader never sees half a report."""
    # Both texts are made before either file is touched: a report that cannot be rendered
    # leaves the earlier pair as it was.
    text = json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n"
    html = render_html(report)
    directory.mkdir(parents=True, exist_ok=True)
    return _replace(directory / JSON_NAME, text), _replace(directory / HTML_NAME, html)


def _replace(path: Path, text: str) -> Path:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def render_html(report: Report) -> str:
    """The report as one HTML page with inline style and an inline SVG timeline."""
    template = _environment().get_template("report.html.j2")
    return template.render(
        report=report,
        duration=duration(report.duration),
        gantt=gantt(report),
        shown_updates=SHOWN_UPDATES,
    )


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bake", "templates_report"),
        # Every name, reason and error in a report comes from outside: escape all of it.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# The timeline chart's geometry, in SVG user units.
LABEL_WIDTH = 150
LABEL_CHARACTERS = 22
STAGE_CHARACTER_WIDTH = 6.5
PLOT_WIDTH = 720
ROW_HEIGHT = 26
BAR_HEIGHT = 16
AXIS_HEIGHT = 30
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    result: str
    title: str
    label: str  # the stage's name, or "" where the bar is too narrow to hold it


@dataclass(frozen=True)
class Row:
    subject: str
    label: str  # the subject, shortened to fit beside the chart
    y: float


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Gantt:
    """Where each subject's row, each stage's bar and each axis tick is drawn."""

    width: int
    height: int
    rows: list[Row]
    bars: list[Bar]
    ticks: list[Tick]
    axis_y: float
    row_height: int = ROW_HEIGHT
    bar_height: int = BAR_HEIGHT


def gantt(report: Report) -> Gantt:
    """The timeline as a chart: a row per subject in order of first appearance, a bar per entry
    placed by its seconds from the rollout's start."""
    origin = parse_time(report.started, "rollout started")
    entries = [
        (
            entry,
            (parse_time(entry.started, "started") - origin).total_seconds(),
            (parse_time(entry.finished, "finished") - origin).total_seconds(),
        )
        for entry in report.timeline
    ]
    start = min([0.0, *(begin for _, begin, _ in entries)])
    end = max([report.duration, *(finish for _, _, finish in entries)])
    span = max(end - start, 1.0)

    def x(seconds: float) -> float:
        return round(LABEL_WIDTH + (seconds - start) / span * PLOT_WIDTH, 1)

    subjects = list(dict.fromkeys(entry.subject for entry in report.timeline))
    tops = {subject: index * ROW_HEIGHT for index, subject in enumerate(subjects)}
    offset = (ROW_HEIGHT - BAR_HEIGHT) / 2
    bars = []
    for entry, begin, finish in entries:
        width = max(round(x(finish) - x(begin), 1), 2.0)
        bars.append(
            Bar(
                x=x(begin),
                y=tops[entry.subject] + offset,
                width=width,
                result=entry.result,
                title=f"{entry.subject}: {entry.stage} {entry.result}, "
                f"{finish - begin:.1f} s from +{begin:.1f} s",
                label=entry.stage if width >= 8 + STAGE_CHARACTER_WIDTH * len(entry.stage) else "",
            )
        )
    step = next((step for step in TICK_STEPS if span / step <= 10), TICK_STEPS[-1])
    first = int(start // step) * step
    ticks = [
        Tick(x=x(seconds), label=f"{seconds:g} s")
        for seconds in range(first, int(end) + 1, step)
        if seconds >= start
    ]
    axis_y = len(subjects) * ROW_HEIGHT
    return Gantt(
        width=LABEL_WIDTH + PLOT_WIDTH + 20,
        height=int(axis_y + AXIS_HEIGHT),
        rows=[Row(subject, _shorten(subject), top) for subject, top in tops.items()],
        bars=bars,
        ticks=ticks,
        axis_y=axis_y,
    )


def _shorten(subject: str) -> str:
    if len(subject) <= LABEL_CHARACTERS:
        return subject
    return subject[: LABEL_CHARACTERS - 1] + "\N{HORIZONTAL ELLIPSIS}"
