"""`bake.toml`: loaded and validated once, before anything else happens.

Every problem is reported in plain words, naming the file, the key and what was expected; a config
that loads is complete enough that no later stage has to re-check it.
"""

from __future__ import annotations

import os
import re
import tomllib
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from bake.errors import ConfigError
from bake.settings import (
    AwsSettings,
    ImageAwsSettings,
    LocalSettings,
    Model,
    NotifySettings,
    Seconds,
    SecondsOrZero,
)
from bake.steps import ChefStep, Step, describe_step_error

DEFAULT_CONFIG = "bake.toml"
TARGET_NAMES = ("local", "aws")
COLORS = ("blue", "green")
ELB_NAME_LIMIT = 32

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_RULE_ARN = re.compile(r"^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:\d{12}:listener-rule/")


def _listener_rule(value: Any) -> int | str:
    """A listener rule, by its priority (1 to 50000) or its ARN."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 50000:
        return value
    if isinstance(value, str) and _RULE_ARN.match(value):
        return value
    raise ValueError(
        f"{value!r} is not a listener rule (give its priority, 1 to 50000, or its ARN "
        "arn:aws:elasticloadbalancing:REGION:ACCOUNT:listener-rule/...)"
    )


ListenerRule = Annotated[int | str, BeforeValidator(_listener_rule)]


class BaseSpec(Model):
    """Where an image starts from.

    kinds: `debian` (the local target's own Debian disk, value = suite), `image` (another image of
    this config, value = its name), `ssm` (an SSM parameter holding an AMI id), `ami` (an AMI id),
    `filter` (the newest AMI matching `filter`).
    """

    kind: Literal["debian", "image", "ssm", "ami", "filter"]
    value: str = ""
    filter: dict[str, Any] | None = None

    def describe(self) -> str:
        if self.kind == "filter":
            return f"filter:{self.filter}"
        if self.kind == "ami":
            return self.value
        return f"{self.kind}:{self.value}"


def _usable_name(name: str, kind: str) -> str:
    """Names end up in AWS resource names and HCL labels: keep them plain."""
    if not _NAME.match(name):
        raise ValueError(
            f"'{name}' is not a usable {kind} name (lowercase letters, digits and dashes, "
            "starting with a letter)"
        )
    return name


def _parse_base(raw: Any) -> BaseSpec:
    if isinstance(raw, BaseSpec):
        return raw
    if isinstance(raw, str):
        if raw.startswith("ami-"):
            return BaseSpec(kind="ami", value=raw)
        kind, sep, value = raw.partition(":")
        if sep and kind in ("debian", "image", "ssm") and value:
            return BaseSpec(kind=kind, value=value)
        raise ValueError(
            f'\'{raw}\' is not a base (write "debian:bookworm", "image:NAME", '
            '"ssm:/parameter/name", an AMI id, or a table { filter = {...} })'
        )
    if isinstance(raw, dict) and len(raw) == 1:
        ((kind, value),) = raw.items()
        if kind == "filter":
            if not isinstance(value, dict) or not value.get("name"):
                raise ValueError('a base filter needs at least name = "pattern"')
            if not value.get("owners"):
                raise ValueError(
                    'a base filter needs owners = ["ACCOUNT"] (or "amazon", "self"): without it '
                    "an AMI of any account whose name matches could be picked"
                )
            return BaseSpec(kind="filter", filter=value)
        if kind in ("debian", "image", "ssm", "ami") and isinstance(value, str) and value:
            return BaseSpec(kind=kind, value=value)
    raise ValueError(
        'a base is a string such as "image:base" or a table with one of '
        "debian, image, ssm, ami, filter"
    )


def _parse_bases(raw: Any) -> dict[str, BaseSpec]:
    """A base for every target, or a table `{ local = ..., aws = ... }`."""
    if isinstance(raw, dict) and raw and set(raw) <= set(TARGET_NAMES):
        return {target: _parse_base(spec) for target, spec in raw.items()}
    spec = _parse_base(raw)
    return {target: spec for target in TARGET_NAMES}


class ImageConfig(Model):
    """A recipe for an AMI: where it starts, how it is provisioned, how it is proven."""

    name: str
    base: Annotated[dict[str, BaseSpec], BeforeValidator(_parse_bases)]
    steps: list[Step]
    verify: list[Path] = Field(min_length=1)
    description: str = ""
    build_timeout: Seconds = 7200
    # How long a cancelled Packer build may take to remove its build instance, key and group.
    stop_grace: Seconds = 300
    verify_timeout: Seconds = 1800
    aws: ImageAwsSettings = Field(default_factory=ImageAwsSettings)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        return _usable_name(name, "image")

    @field_validator("steps")
    @classmethod
    def _one_s3_package(cls, steps: list[Step]) -> list[Step]:
        urls = _s3_package_urls(steps)
        if len(urls) > 1:
            raise ValueError(
                f"one image can fetch one s3:// client package, not {len(urls)} ({', '.join(urls)})"
            )
        return steps

    @property
    def s3_package_url(self) -> str | None:
        """The s3:// client package of the image's chef steps, which the target presigns at build
        time; None when no chef step downloads one from S3."""
        urls = _s3_package_urls(self.steps)
        return urls[0] if urls else None

    def base_for(self, target: str) -> BaseSpec:
        return self.base[target]

    def has_step(self, kind: str) -> bool:
        return any(step.kind == kind for step in self.steps)


def _s3_package_urls(steps: list[Step]) -> list[str]:
    return sorted(
        {url for step in steps if isinstance(step, ChefStep) and (url := step.s3_package_url)}
    )


class Capacity(Model):
    min: int = Field(ge=0)
    desired: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Capacity:
        if not self.min <= self.desired <= self.max:
            raise ValueError(
                f"needs min <= desired <= max, got {self.min}, {self.desired}, {self.max}"
            )
        return self


def _parse_capacity(raw: Any) -> Any:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return {"min": raw, "desired": raw, "max": raw}
    return raw


class ColorNames(Model):
    asg: str
    target_group: str


class ServiceConfig(Model):
    """A blue/green pair of Auto Scaling groups behind one load balancer listener."""

    name: str
    image: str
    capacity: Annotated[Capacity, BeforeValidator(_parse_capacity)]
    instance_type: str | None = None
    instance_profile: str | None = None
    # The role the instance profile holds, which `bake iam-policy` lets the pipeline pass to EC2;
    # the profile's name when not given (the console names a role's profile after it).
    instance_role: str | None = None
    launch_template: str = ""
    load_balancer: str = ""
    listener_port: int = Field(default=80, gt=0, lt=65536)
    listener_rule: ListenerRule | None = None
    blue: ColorNames | None = None
    green: ColorNames | None = None
    health_timeout: Seconds = 600
    shift_steps: list[Annotated[int, Field(gt=0, le=100)]] = Field(default_factory=lambda: [100])
    shift_interval: Seconds = 30
    # CloudWatch alarms watched during the shift and the soak; one in ALARM rolls traffic back.
    alarms: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(default_factory=list)
    # How long the new colour is watched after it takes all traffic, before the rollout is live.
    soak: SecondsOrZero = 300
    # What happens to the previous colour after the soak: kept running, or scaled in to zero.
    standby_after_soak: Literal["warm", "scale-in"] = "warm"
    # Where `bake release` keeps the service's releases (s3://BUCKET[/PREFIX]); the local target
    # has a bucket of its own when it is not given.
    releases: str | None = Field(
        default=None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()/-]*)?$"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_names(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "name" not in data:
            return data
        name = data["name"]
        data = dict(data)
        data.setdefault("launch_template", name)
        data.setdefault("load_balancer", name)
        for color in COLORS:
            data.setdefault(color, {"asg": f"{name}-{color}", "target_group": f"{name}-{color}"})
        return data

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        return _usable_name(name, "service")

    @model_validator(mode="after")
    def _aws_name_lengths(self) -> ServiceConfig:
        """Load balancer and target group names are at most 32 characters on AWS."""
        for key, value in (
            ("load_balancer", self.load_balancer),
            *((f"{color}.target_group", self.names(color).target_group) for color in COLORS),
        ):
            if len(value) > ELB_NAME_LIMIT:
                raise ValueError(
                    f"{key} '{value}' is longer than {ELB_NAME_LIMIT} characters, AWS's limit "
                    f"(use a service name of at most {ELB_NAME_LIMIT - len('-green')} characters, "
                    "or give the names)"
                )
        return self

    @model_validator(mode="after")
    def _role_of_a_profile(self) -> ServiceConfig:
        if self.instance_role and not self.instance_profile:
            raise ValueError("instance_role is the role of instance_profile, which is not given")
        return self

    @property
    def role(self) -> str | None:
        """The role of the service's instance profile, or None without a profile."""
        return self.instance_role or self.instance_profile

    @field_validator("shift_steps")
    @classmethod
    def _ends_at_100(cls, steps: list[int]) -> list[int]:
        rising = all(earlier < later for earlier, later in pairwise(steps))
        if not steps or steps[-1] != 100 or not rising:
            raise ValueError("must rise and end at 100, for example [10, 50, 100]")
        return steps

    def names(self, color: str) -> ColorNames:
        return self.blue if color == "blue" else self.green  # type: ignore[return-value]


class Config(Model):
    path: Path
    target: Literal["local", "aws"] = "local"
    state_dir: Path = Path(".bake")
    packer_dir: Path = Path("packer")
    cookbooks_dir: Path = Path("cookbooks")
    local: LocalSettings = Field(default_factory=LocalSettings)
    aws: AwsSettings = Field(default_factory=AwsSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    images: dict[str, ImageConfig] = Field(min_length=1)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The folder paths in the config are relative to."""
        return self.path.parent

    @property
    def packer_path(self) -> Path:
        """The folder of Packer templates and the scripts they run."""
        return (self.root / self.packer_dir).resolve()

    @property
    def cookbooks_path(self) -> Path:
        return (self.root / self.cookbooks_dir).resolve()

    @property
    def region(self) -> str:
        return self.local.region if self.target == "local" else self.aws.region

    def image(self, name: str) -> ImageConfig:
        if name not in self.images:
            raise ConfigError(
                f"unknown image '{name}' in {self.path}",
                hint=f"known images: {', '.join(sorted(self.images))}",
            )
        return self.images[name]

    def service(self, name: str) -> ServiceConfig:
        if name not in self.services:
            known = ", ".join(sorted(self.services)) or "none configured"
            raise ConfigError(
                f"unknown service '{name}' in {self.path}", hint=f"known services: {known}"
            )
        return self.services[name]

    @model_validator(mode="after")
    def _references(self) -> Config:
        for image in self.images.values():
            spec = image.base_for(self.target)
            if spec.kind == "image":
                if spec.value not in self.images:
                    raise ValueError(
                        f"images.{image.name}.base: no image '{spec.value}' "
                        f"(known images: {', '.join(sorted(self.images))})"
                    )
                if spec.value == image.name:
                    raise ValueError(f"images.{image.name}.base: an image cannot build on itself")
            for index, step in enumerate(image.steps):
                if step.kind == "ssm-agent" and self.target == "local":
                    # Refused rather than skipped: an image that seems to carry the agent and
                    # does not would fail its suites, or a rollout's proof, much later.
                    raise ValueError(
                        f"images.{image.name}.steps[{index}] (ssm-agent): the local target has "
                        "no Systems Manager for the agent to register with; the step is for "
                        'target = "aws"'
                    )
            if spec.kind == "debian" and self.target != "local":
                raise ValueError(
                    f"images.{image.name}.base: debian:{spec.value} is built by the local target "
                    f"only; on {self.target} give ssm:/parameter, an AMI id or a filter"
                )
            for path in image.verify:
                if not (self.root / path).exists():
                    raise ValueError(
                        f"images.{image.name}.verify: '{path}' does not exist (expected a file or "
                        f"folder of testinfra suites relative to {self.root})"
                    )
        for service in self.services.values():
            if service.image not in self.images:
                raise ValueError(
                    f"services.{service.name}.image: no image '{service.image}' "
                    f"(known images: {', '.join(sorted(self.images))})"
                )
        _check_layer_cycles(self)
        if self.aws.share_parameter and not any(
            image.aws.ami_users or image.aws.ami_org_arns for image in self.images.values()
        ):
            raise ValueError(
                'aws.share_parameter: "ram" shares each image\'s parameter with its ami_users and '
                "ami_org_arns, and no image names any"
            )
        return self


def _check_layer_cycles(config: Config) -> None:
    for start in config.images:
        seen = {start}
        spec = config.images[start].base_for(config.target)
        while spec.kind == "image":
            if spec.value in seen:
                raise ValueError(f"images.{start}.base: layers form a cycle through '{spec.value}'")
            seen.add(spec.value)
            spec = config.images[spec.value].base_for(config.target)


def _describe(error: ErrorDetails) -> str:
    """One problem in plain words: where it is, what is wrong and what would be right."""
    # pydantic names validators (`function-after[...]`) and dict keys (`[key]`) in locations.
    loc = [
        str(part)
        for part in error["loc"]
        if not str(part).startswith("function-") and part != "[key]"
    ]
    if len(loc) > 3 and loc[0] == "images" and loc[2] == "steps":
        return describe_step_error(f"images.{loc[1]}.steps[{loc[3]}]", loc[4:], error)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    location = ".".join(loc)
    return f"{location}: {message}" if location else message


def load(path: Path | str | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError naming every problem found."""
    path = Path(path or os.environ.get("BAKE_CONFIG") or DEFAULT_CONFIG).absolute()
    if not path.is_file():
        raise ConfigError(
            f"no config file at {path}",
            hint="create bake.toml or pass --config PATH",
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint="save the file as UTF-8",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return from_dict(raw, path)


def from_dict(raw: dict[str, Any], path: Path) -> Config:
    """Validate an already-parsed config; `path` anchors relative paths and names the file."""
    data = dict(raw)
    for section in ("images", "services"):
        entries = data.get(section)
        if isinstance(entries, dict):
            data[section] = {
                name: {**body, "name": name} if isinstance(body, dict) else body
                for name, body in entries.items()
            }
    data["path"] = path
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(problems)) from None
    if override := os.environ.get("BAKE_STATE_DIR"):
        config = config.model_copy(update={"state_dir": Path(override)})
    return config


def state_dir(config: Config) -> Path:
    """The state directory, absolute: history, locks, rendered templates, images, logs."""
    directory = config.state_dir
    return (directory if directory.is_absolute() else config.root / directory).resolve()
