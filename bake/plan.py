"""What a bake of each image would start from, and whether its published AMI is stale: a base
rotation (a parent image's new verified AMI, a new distribution AMI) is never silently missed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bake.aws import images
from bake.config import Config
from bake.errors import BakeError
from bake.targets.base import Target


@dataclass(frozen=True)
class ImagePlan:
    image: str
    base: str
    base_ami: str | None
    published: str | None
    built_from: str | None
    action: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layered_order(config: Config) -> list[str]:
    """Image names with every parent before its children."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        spec = config.images[name].base_for(config.target)
        if spec.kind == "image" and spec.value not in ordered:
            visit(spec.value)
        if name not in ordered:
            ordered.append(name)

    for name in config.images:
        visit(name)
    return ordered


def plan_image(config: Config, target: Target, name: str) -> ImagePlan:
    image = config.images[name]
    spec = image.base_for(target.name)
    published = images.published(target.cloud, name)
    built_from = None
    if published:
        described = images.describe(target.cloud, published)
        built_from = images.tags_of(described or {}).get("bake:source-ami")
    try:
        base_ami: str | None = target.resolve_base(image).ami
    except BakeError as exc:
        return ImagePlan(name, spec.describe(), None, published, built_from, "blocked", exc.message)
    if published is None:
        action, reason = "bake", "no verified AMI published yet"
    elif built_from != base_ami:
        action, reason = "bake", f"base rotated: built from {built_from}, base is now {base_ami}"
    else:
        action, reason = "up to date", f"built from the current base {base_ami}"
    return ImagePlan(name, spec.describe(), base_ami, published, built_from, action, reason)


def plan(config: Config, target: Target) -> list[ImagePlan]:
    return [plan_image(config, target, name) for name in layered_order(config)]
