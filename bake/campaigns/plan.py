"""The plan of a rollout: for each selected image, in layered order, whether it is stale and why;
for each service below them, whether it needs a swap. Planning reads tags, history, package lists
and the archive's indexes; it builds, boots and changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from debian.debian_support import version_compare

from bake import archive, bluegreen, freshness, sbom
from bake.aws import images
from bake.config import Config, ImageConfig
from bake.errors import BakeError, InputError
from bake.inventory import Inventory
from bake.packages import Package, Update, describe_updates
from bake.plan import layered_order
from bake.stages.build import inputs_digest
from bake.stages.render import render_image
from bake.stages.verify import suite_files, suites_digest

if TYPE_CHECKING:  # the App wires every part a plan reads
    from bake.app import App

# A kernel metapackage (linux-image-cloud-amd64), not one kernel (linux-image-6.1.0-28-cloud-amd64).
KERNEL_METAPACKAGE = re.compile(r"^linux-image-[a-z]")


class CampaignRefused(BakeError):
    """The rollout cannot do what was asked, and says so before it builds anything (exit 1)."""

    exit_code = 1


@dataclass(frozen=True)
class Selection:
    """What the command line asked for."""

    images: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    all: bool = False
    rebuild: tuple[str, ...] = ()
    swap_only: bool = False
    require_kernel: str | None = None


@dataclass(frozen=True)
class ImageDecision:
    name: str
    published: str | None
    kernel: str  # the published AMI's bake:kernel (uname -r on its verification)
    kernel_version: str  # the Debian version of that kernel's package
    stale: bool
    reasons: tuple[str, ...] = ()
    updates: tuple[Update, ...] = ()
    parent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "published": self.published,
            "kernel": self.kernel,
            "kernel_version": self.kernel_version,
            "stale": self.stale,
            "reasons": list(self.reasons),
            "updates": [update.to_dict() for update in self.updates],
            "parent": self.parent,
        }


@dataclass(frozen=True)
class ServiceDecision:
    name: str
    image: str
    live_ami: str | None
    action: Literal["swap", "swap after bake", "up to date", "blocked"]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "live_ami": self.live_ami,
            "action": self.action,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class CampaignPlan:
    images: list[ImageDecision]
    services: list[ServiceDecision]
    require_kernel: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def stale(self) -> list[ImageDecision]:
        return [image for image in self.images if image.stale]

    @property
    def swaps(self) -> list[ServiceDecision]:
        return [s for s in self.services if s.action in ("swap", "swap after bake")]

    @property
    def nothing_to_do(self) -> bool:
        return not self.stale and not self.swaps

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": [image.to_dict() for image in self.images],
            "services": [service.to_dict() for service in self.services],
            "require_kernel": self.require_kernel,
            "nothing_to_do": self.nothing_to_do,
            "notes": self.notes,
        }

    def describe(self) -> str:
        if self.nothing_to_do:
            return "nothing to do: every selected image is current and every service runs it"
        lines = []
        for image in self.images:
            what = "bake" if image.stale else "up to date"
            why = "; ".join(image.reasons) if image.reasons else (image.published or "")
            lines.append(f"image {image.name:<12} {what:<10} {why}")
        for service in self.services:
            lines.append(f"service {service.name:<10} {service.action:<15} {service.reason}")
        return "\n".join([*lines, *self.notes])


def select(config: Config, selection: Selection) -> tuple[list[str], list[str]]:
    """The images (parents first) and services a rollout covers; bad names are bad input."""
    for name in (*selection.images, *selection.rebuild):
        config.image(name)
    for name in selection.services:
        config.service(name)
    if not (selection.all or selection.images or selection.services or selection.rebuild):
        raise InputError(
            "bake rollout needs images to roll out, --service NAME or --all",
            hint="for example: bake rollout --all --dry-run",
        )
    order = layered_order(config)
    if selection.all:
        chosen = set(order)
    else:
        named = set(selection.images) | set(selection.rebuild)
        chosen = {n for n in order if named & set(lineage(config, n))}
        for service in selection.services:
            chosen.update(lineage(config, config.services[service].image))
    services = [
        name
        for name, service in config.services.items()
        if service.image in chosen
        and (not selection.services or name in selection.services or selection.all)
    ]
    return [name for name in order if name in chosen], services


def lineage(config: Config, name: str) -> list[str]:
    """`name` and its parents by `image:` bases, the image itself first."""
    names = [name]
    spec = config.images[name].base_for(config.target)
    while spec.kind == "image":
        names.append(spec.value)
        spec = config.images[spec.value].base_for(config.target)
    return names


class Planner:
    """Reads what a plan needs through the App's target, history and state."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.config = app.config
        self.target = app.target
        self.inventory = Inventory(app.history.path)
        self._archives: dict[tuple[archive.Suite, ...], archive.Archive] = {}
        self._packages: dict[str, list[Package] | None] = {}  # by AMI, read once per plan

    def plan(self, selection: Selection) -> CampaignPlan:
        image_names, service_names = select(self.config, selection)
        self.target.prepare()
        decisions: dict[str, ImageDecision] = {}
        for name in image_names:
            decisions[name] = self.image(name, selection, decisions)
        if selection.swap_only:
            decisions = {n: _not_baked(d) for n, d in decisions.items()}
        self._check_kernel_available(selection, decisions)
        services = [self.service(name, decisions) for name in service_names]
        return CampaignPlan(list(decisions.values()), services, selection.require_kernel)

    # images

    def image(
        self, name: str, selection: Selection, decided: dict[str, ImageDecision]
    ) -> ImageDecision:
        image = self.config.images[name]
        spec = image.base_for(self.target.name)
        parent = spec.value if spec.kind == "image" else None
        published = images.published(self.target.cloud, name)
        tags = (
            images.tags_of(images.describe(self.target.cloud, published) or {}) if published else {}
        )
        packages = self.packages_of(published, tags) if published else None
        kernel = tags.get("bake:kernel", "")
        kernel_version = kernel_package_version(packages or [], kernel)
        reasons: list[str] = []
        updates: list[Update] = []
        if name in selection.rebuild:
            reasons.append("a rebuild was asked for")
        if published is None:
            reasons.append("no verified AMI published yet")
        if parent and decided.get(parent) and decided[parent].stale:
            reasons.append(f"its base {parent} is baked again")
        if published:
            reasons += self._changes(name, image, tags)
            if packages is not None:
                source = self.packages_of(tags.get("bake:source-ami", ""), {})
                updates = freshness.pending_for_image(
                    image, packages, source, self.archive_for(name)
                )
                if updates:
                    reasons.append(f"updates pending: {describe_updates(updates)}")
            required = selection.require_kernel
            if required and kernel_version and version_compare(kernel_version, required) < 0:
                reasons.append(f"its kernel {kernel_version} is older than {required}")
            elif required and not kernel_version:
                reasons.append(f"its kernel version is not known (required: {required})")
        return ImageDecision(
            name, published, kernel, kernel_version, bool(reasons), tuple(reasons),
            tuple(updates), parent,
        )  # fmt: skip

    def _changes(self, name: str, image: ImageConfig, tags: dict[str, str]) -> list[str]:
        """Base rotation and changed inputs or suites, against the published AMI's tags."""
        reasons = []
        try:
            base = self.target.resolve_base(image).ami
        except BakeError as exc:
            raise CampaignRefused(f"image {name}: {exc.message}", hint=exc.hint) from None
        built_from = tags.get("bake:source-ami")
        if built_from and built_from != base:
            reasons.append(f"base rotated: built from {built_from}, base is now {base}")
        ctx = self.app.context(image=name)
        rendered = render_image(ctx, image)
        published_inputs = tags.get("bake:inputs")
        if published_inputs and published_inputs != inputs_digest(rendered, self.target.name):
            reasons.append("its template, scripts or cookbooks changed")
        published_suites = tags.get("bake:suites")
        if published_suites and published_suites != suites_digest(suite_files(ctx)):
            reasons.append("its verification suites changed")
        return reasons

    def packages_of(self, ami: str, tags: dict[str, str]) -> list[Package] | None:
        """An AMI's package list: recorded here, or read from its published SBOM."""
        if not ami:
            return None
        if ami in self._packages:
            return self._packages[ami]
        self._packages[ami] = self._read_packages(ami, tags)
        return self._packages[ami]

    def _read_packages(self, ami: str, tags: dict[str, str]) -> list[Package] | None:
        known = self.inventory.packages(ami, self.target.artifact_of(ami))
        if known is not None:
            return known
        location = tags.get("bake:sbom")
        document = self.target.read_sbom(location) if location else None
        return sbom.packages_from_cyclonedx(document) if document else None

    def archive_for(self, name: str) -> archive.Archive:
        """The archive the image takes its updates from: its own patch step's suites, else its
        nearest parent's, else the target's mirrors."""
        mirrors = self.target.mirrors()
        suites = None
        for ancestor in lineage(self.config, name):
            suites = freshness.patch_suites(self.config.images[ancestor], mirrors)
            if suites:
                break
        suites = suites or archive.suites_for("bookworm", mirrors.mirror, mirrors.security_mirror)
        key = tuple(suites)
        if key not in self._archives:
            self._archives[key] = freshness.open_archive(self.app.state, suites, mirrors.keyring)
        return self._archives[key]

    def _check_kernel_available(
        self, selection: Selection, decided: dict[str, ImageDecision]
    ) -> None:
        """Refuse, before anything is built, a required kernel the archive does not have."""
        required = selection.require_kernel
        if not required:
            return
        for decision in decided.values():
            image = self.config.images[decision.name]
            if not freshness.has_patch_step(image):
                continue
            packages = self.packages_of(decision.published or "", {}) or []
            for metapackage in [p for p in packages if KERNEL_METAPACKAGE.match(p.name)]:
                newest = self.archive_for(decision.name).candidate(
                    metapackage.name, metapackage.architecture
                )
                if newest is None or version_compare(newest.version, required) < 0:
                    have = f"{newest.version} ({newest.suite})" if newest else "not in it"
                    raise CampaignRefused(
                        f"the archive has no kernel {required} or newer for image "
                        f"{decision.name}: the newest {metapackage.name} is {have}",
                        hint="wait for the fix to reach the archive, or name another mirror",
                    )

    # services

    def service(self, name: str, decided: dict[str, ImageDecision]) -> ServiceDecision:
        service = self.config.services[name]
        image = decided[service.image]
        try:
            state = bluegreen.describe(self.target.cloud, service)
        except BakeError as exc:
            return ServiceDecision(name, service.image, None, "blocked", exc.message)
        live = state.live.ami if state.live else None
        if image.stale:
            return ServiceDecision(
                name, service.image, live, "swap after bake", f"{service.image} is baked first"
            )
        if image.published is None:
            return ServiceDecision(
                name, service.image, live, "blocked", f"{service.image} has no verified AMI"
            )
        if live != image.published:
            why = f"runs {live}; {service.image}'s published AMI is {image.published}"
            return ServiceDecision(name, service.image, live, "swap", why)
        return ServiceDecision(name, service.image, live, "up to date", f"runs {live}")


def _not_baked(decision: ImageDecision) -> ImageDecision:
    """With --swap-only nothing is baked: a stale image is rolled out as published."""
    if not decision.stale:
        return decision
    note = "not baked (--swap-only): " + "; ".join(decision.reasons)
    return ImageDecision(
        decision.name, decision.published, decision.kernel, decision.kernel_version, False,
        (note,), decision.updates, decision.parent,
    )  # fmt: skip


def kernel_package_version(packages: list[Package], kernel: str) -> str:
    """The Debian version of the kernel `uname -r` names (its linux-image-RELEASE package), else
    of the newest kernel installed."""
    by_name = {package.name: package for package in packages}
    if kernel and f"linux-image-{kernel}" in by_name:
        return by_name[f"linux-image-{kernel}"].version
    kernels = [
        p
        for p in packages
        if p.name.startswith("linux-image-") and not KERNEL_METAPACKAGE.match(p.name)
    ]
    if not kernels:
        return ""
    newest = kernels[0]
    for candidate in kernels[1:]:
        if version_compare(candidate.version, newest.version) > 0:
            newest = candidate
    return newest.version
