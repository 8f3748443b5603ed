"""The provisioning steps of an image, one model per kind, so every option is checked when bake.toml
loads and the code that renders a step reads typed fields.

bake.toml writes a step as `"patch"`, `{ shell = "x.sh" }` or `{ chef = { ... } }`; `_tagged` turns
these into `{"kind": ..., **options}` for the union `Step`. The messages of the checks here follow
the option's name (`client.version 'latest' is wrong: ...`); `describe_step_error` puts them
together.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

from bake.settings import MirrorUrl, Model

CLIENT_EXAMPLE = '{ method = "omnitruck", product = "chef", version = "18.5.0" }'
RUN_LIST_EXAMPLE = 'write run_list = ["recipe[cookbook]", "recipe[cookbook::recipe]"]'
PINNED_VERSION = 'omnitruck needs a pinned version, such as version = "18.5.0"'
PACKAGE_URL = 'the .deb\'s address, "https://..." or "s3://bucket/key"'
PACKAGE_SHA256 = "the 64 hex digits of the package's SHA-256, from `sha256sum`"
CLIENT_METHOD = f"one of omnitruck, url, preinstalled (for example client = {CLIENT_EXAMPLE})"

_RUN_LIST_ITEM = re.compile(r"^recipe\[([A-Za-z0-9_.-]+)(?:::([A-Za-z0-9_.-]+))?\]$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_AGENT_VERSION = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_CLOUDWATCH_AGENT_VERSION = re.compile(r"^\d+\.\d+\.\d+(b\d+)?$")
# Characters a shipped file's path may have: they go unquoted through Packer's environment, the
# shell, rsyslog's and the CloudWatch agent's configurations; * and ? are the wildcards.
_LOG_FILE = re.compile(r"^/[A-Za-z0-9._+@=:,/*?-]+$")
_LOG_GROUP = re.compile(r"^[A-Za-z0-9._/#-]{1,512}$")
LOG_FILE_EXAMPLE = "/var/log/nginx/*.log"
LOG_FILE_RULE = (
    f'write an absolute path or glob such as "{LOG_FILE_EXAMPLE}" (letters, digits, '
    ". _ - + @ = : , and the wildcards * and ?; no empty, . or .. part, no **)"
)
# The retention periods CloudWatch Logs accepts (PutRetentionPolicy), in days.
RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
)  # fmt: skip
_APP_DIRECTORY = re.compile(r"^(/[A-Za-z0-9._-]+)+/?$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_UNIT = re.compile(r"^[A-Za-z0-9@:._-]+\.(service|socket|target)$")


def _text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {value!r} (quote it in bake.toml)")
    return value


def _shell_name(name: str) -> str:
    if not _SHELL_NAME.match(name):
        raise ValueError(
            "is not a shell variable name (letters, digits and _, not starting with a digit)"
        )
    return name


Text = Annotated[str, BeforeValidator(_text)]
ShellName = Annotated[str, AfterValidator(_shell_name)]


class PatchStep(Model):
    """`apt-get dist-upgrade` from the suite, -updates and -security; a mirror left out is the
    target's own."""

    kind: Literal["patch"] = "patch"
    suite: Text = "bookworm"
    mirror: MirrorUrl | None = None
    security_mirror: MirrorUrl | None = None


class HardenStep(Model):
    """sshd, kernel and filesystem settings of packer/scripts/harden.sh."""

    kind: Literal["harden"] = "harden"


class LineageStep(Model):
    """/etc/bake/lineage.json: where the image came from."""

    kind: Literal["lineage"] = "lineage"


class ShellStep(Model):
    """A script of the user's, relative to bake.toml, run with `environment`."""

    kind: Literal["shell"] = "shell"
    script: Text
    environment: dict[ShellName, Text] = Field(default_factory=dict)


class SsmAgentStep(Model):
    """AWS's SSM agent from the build region's own bucket, checked and enabled at boot, so that
    Session Manager and Run Command reach the image's instances (the aws target only)."""

    kind: Literal["ssm-agent"] = "ssm-agent"
    version: Text = "latest"
    sha256: Text | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, version: str) -> str:
        if version != "latest" and not _AGENT_VERSION.match(version):
            raise ValueError(
                f'{version!r} is wrong: write "latest" or a release such as "3.3.1142.0"'
            )
        return version

    @field_validator("sha256")
    @classmethod
    def _digest(cls, digest: str | None, info: ValidationInfo) -> str | None:
        if digest is None:
            return None
        if info.data.get("version", "latest") == "latest":
            raise ValueError(
                'needs a pinned version (the latest package changes): add version = "X.Y.Z.N"'
            )
        return str(_sha256(digest))


def _log_files(files: Any) -> Any:
    if not isinstance(files, list | tuple):
        raise ValueError(f'must be a list, such as files = ["{LOG_FILE_EXAMPLE}"]')
    for path in files:
        if not (isinstance(path, str) and _LOG_FILE.match(path)):
            raise ValueError(f"entry {path!r} is wrong: {LOG_FILE_RULE}")
        parts = path.split("/")[1:]
        if "" in parts or "." in parts or ".." in parts or "**" in path:
            raise ValueError(f"entry {path!r} is wrong: {LOG_FILE_RULE}")
    repeated = sorted({path for path in files if files.count(path) > 1})
    if repeated:
        raise ValueError(f"lists {', '.join(map(repr, repeated))} more than once")
    return tuple(files)


def _log_group(group: Any) -> Any:
    if not (isinstance(group, str) and _LOG_GROUP.match(group)):
        raise ValueError(
            f"{group!r} is not a CloudWatch Logs group name (1 to 512 of letters, digits and "
            '_ - . / #, such as "/goldenbake/web")'
        )
    return group


def _retention(days: Any) -> Any:
    if isinstance(days, bool) or days not in RETENTION_DAYS:
        raise ValueError(
            f"{days!r} is not a retention CloudWatch Logs offers "
            f"({', '.join(map(str, RETENTION_DAYS))} days)"
        )
    return days


class ShipLogsStep(Model):
    """The machine's logs off it as they are written: the journal (everything journald gets,
    services' standard output included) and the application's `files`. On the local target
    rsyslog sends them to the host's collector; on aws the CloudWatch agent sends them to
    CloudWatch Logs (`log_group`, default /goldenbake/IMAGE), one stream per instance and file.
    The aws options are accepted on the local target, where they do nothing, so that one
    bake.toml serves both."""

    kind: Literal["ship-logs"] = "ship-logs"
    files: Annotated[tuple[str, ...], BeforeValidator(_log_files)] = ()
    log_group: Annotated[str | None, BeforeValidator(_log_group)] = None
    retention_days: Annotated[int | None, BeforeValidator(_retention)] = None
    agent_version: Text = "latest"
    agent_sha256: Text | None = None

    @field_validator("agent_version")
    @classmethod
    def _agent_version(cls, version: str) -> str:
        if version != "latest" and not _CLOUDWATCH_AGENT_VERSION.match(version):
            raise ValueError(
                f'{version!r} is wrong: write "latest" or a release such as "1.300040.0b650"'
            )
        return version

    @field_validator("agent_sha256")
    @classmethod
    def _agent_digest(cls, digest: str | None, info: ValidationInfo) -> str | None:
        if digest is None:
            return None
        if info.data.get("agent_version", "latest") == "latest":
            raise ValueError(
                "needs a pinned agent_version (the latest package changes): add "
                'agent_version = "1.300040.0b650"'
            )
        return str(_sha256(digest))

    def group_for(self, image: str) -> str:
        """The log group the image's instances ship to."""
        return self.log_group or f"/goldenbake/{image}"


class PullDeployStep(Model):
    """At every boot the instance installs the release its user data names (`bake release`): into
    `directory`, run as `user`; the units in `before` (the health check's server) start only once
    it is installed."""

    kind: Literal["pull-deploy"] = "pull-deploy"
    directory: Text = "/srv/app"
    user: Text = "app"
    before: list[Text] = Field(default_factory=list)

    @field_validator("directory")
    @classmethod
    def _directory(cls, directory: str) -> str:
        if not _APP_DIRECTORY.match(directory) or directory.rstrip("/") in ("", "/usr", "/etc"):
            raise ValueError(
                f"{directory!r} is wrong: an absolute folder of letters, digits, '.', '_', '-' "
                '(for example "/srv/app")'
            )
        return directory.rstrip("/")

    @field_validator("user")
    @classmethod
    def _user(cls, user: str) -> str:
        if not _USER.match(user) or user == "root":
            raise ValueError(f"{user!r} is wrong: a system user's name, not root (for example app)")
        return user

    @field_validator("before")
    @classmethod
    def _units(cls, units: list[str]) -> list[str]:
        for unit in units:
            if not _UNIT.match(unit):
                raise ValueError(
                    f'{unit!r} is not a systemd unit name (for example "nginx.service")'
                )
        return units


class SealStep(Model):
    """Removes host keys and the machine id; bake.provisioners adds it last, bake.toml cannot."""

    kind: Literal["seal"] = "seal"


def _product(product: Any) -> Any:
    if product not in ("chef", "cinc"):
        raise ValueError(f"{product!r} is not one of chef, cinc")
    return product


def _pinned_version(version: Any) -> Any:
    if not (isinstance(version, str) and _VERSION.match(version)):
        raise ValueError(f"{version!r} is wrong: {PINNED_VERSION}")
    return version


def _package_url(url: Any) -> Any:
    if not (isinstance(url, str) and url.startswith(("https://", "s3://"))):
        raise ValueError(f"{url!r} is wrong: {PACKAGE_URL}")
    if url.startswith("s3://") and "/" not in url.removeprefix("s3://").strip("/"):
        raise ValueError(f'{url!r} names no object (write "s3://bucket/key")')
    return url


def _sha256(digest: Any) -> Any:
    if not (isinstance(digest, str) and _SHA256.match(digest)):
        raise ValueError(f"{digest!r} is wrong: {PACKAGE_SHA256}")
    return digest.lower()


Product = Annotated[Literal["chef", "cinc"], BeforeValidator(_product)]


class OmnitruckClient(Model):
    """Chef's install script fetches the pinned version of chef or cinc."""

    method: Literal["omnitruck"] = "omnitruck"
    product: Product = "chef"
    version: Annotated[str, BeforeValidator(_pinned_version)]


class UrlClient(Model):
    """A .deb from an https:// address or an S3 object, checked against its SHA-256."""

    method: Literal["url"] = "url"
    product: Product = "chef"
    url: Annotated[str, BeforeValidator(_package_url)]
    sha256: Annotated[str, BeforeValidator(_sha256)]

    @property
    def from_s3(self) -> bool:
        """The package is an S3 object, which the target presigns at build time."""
        return self.url.startswith("s3://")


class PreinstalledClient(Model):
    """The base image already has the client."""

    method: Literal["preinstalled"] = "preinstalled"
    product: Product = "chef"


ChefClient = Annotated[
    OmnitruckClient | UrlClient | PreinstalledClient, Field(discriminator="method")
]


def _run_list(run_list: Any) -> Any:
    if not (isinstance(run_list, list) and run_list):
        raise ValueError(f"is required ({RUN_LIST_EXAMPLE})")
    for item in run_list:
        if not (isinstance(item, str) and _RUN_LIST_ITEM.match(item)):
            raise ValueError(f"entry {item!r} is not a recipe ({RUN_LIST_EXAMPLE})")
    return run_list


def _attributes(attributes: Any) -> Any:
    if not isinstance(attributes, dict):
        raise ValueError("must be a table: attributes = { golden_web = {} }")
    if "run_list" in attributes:
        raise ValueError("cannot set run_list (give recipes in run_list)")
    try:
        json.dumps(attributes)
    except TypeError:
        raise ValueError("may hold strings, numbers, booleans, arrays, tables") from None
    return attributes


class ChefStep(Model):
    """Cookbooks converged in local mode: the recipes, the node's attributes, and where the client
    comes from."""

    kind: Literal["chef"] = "chef"
    run_list: Annotated[tuple[str, ...], BeforeValidator(_run_list)]
    attributes: Annotated[dict[str, Any], BeforeValidator(_attributes)] = Field(
        default_factory=dict
    )
    client: ChefClient

    @property
    def s3_package_url(self) -> str | None:
        """The client package's s3:// address; None when the client comes from elsewhere."""
        client = self.client
        return client.url if isinstance(client, UrlClient) and client.from_s3 else None


STEPS: dict[str, type[Model]] = {
    "patch": PatchStep,
    "harden": HardenStep,
    "lineage": LineageStep,
    "shell": ShellStep,
    "chef": ChefStep,
    "ssm-agent": SsmAgentStep,
    "ship-logs": ShipLogsStep,
    "pull-deploy": PullDeployStep,
}
CLIENTS: dict[str, type[Model]] = {
    "omnitruck": OmnitruckClient,
    "url": UrlClient,
    "preinstalled": PreinstalledClient,
}

# Said after the option's name when a required option is missing.
_MISSING = {
    "script": 'is missing: a shell step needs script = "path/to/script.sh"',
    "run_list": f"is required ({RUN_LIST_EXAMPLE})",
    "client": f"is required, for example client = {CLIENT_EXAMPLE}",
    "client.version": f"is missing: {PINNED_VERSION}",
    "client.url": f"is missing: {PACKAGE_URL}",
    "client.sha256": f"is missing: {PACKAGE_SHA256}",
}


def _tagged(raw: Any) -> Any:
    """bake.toml's forms of a step as one table tagged with its kind: `"patch"` becomes
    `{"kind": "patch"}` and `{ shell = "x.sh" }` becomes `{"kind": "shell", "script": "x.sh"}`."""
    if isinstance(raw, Model):
        return raw
    if isinstance(raw, str):
        raw = {raw: {}}
    if not (isinstance(raw, dict) and len(raw) == 1):
        raise ValueError('a step is a name such as "patch" or a table such as { shell = "x.sh" }')
    ((kind, options),) = raw.items()
    if kind == "shell" and isinstance(options, str):
        options = {"script": options}
    if not isinstance(options, dict):
        raise ValueError(f"step '{kind}' takes a table of options")
    if "kind" in options:
        raise ValueError(f"step '{kind}' has no option 'kind'")
    if kind == "seal":
        raise ValueError("seal is added last to every image; leave it out of steps")
    return {"kind": kind, **options}


Step = Annotated[
    PatchStep
    | HardenStep
    | LineageStep
    | ShellStep
    | ChefStep
    | SsmAgentStep
    | ShipLogsStep
    | PullDeployStep,
    Field(discriminator="kind"),
    BeforeValidator(_tagged),
]


def describe_step_error(where: str, loc: list[str], error: ErrorDetails) -> str:
    """A problem with a step in one line: `images.web.steps[0] (chef): client.version ...`.

    `loc` is pydantic's location inside the step: the kind first, then the option, with the
    client's method between `client` and its key.
    """
    if not loc:
        return f"{where}: {_step_problem(error)}"
    kind, keys = loc[0], loc[1:]
    method = keys.pop(1) if keys[:1] == ["client"] and len(keys) > 1 else None
    return f"{where} ({kind}): {_option_problem(kind, method, '.'.join(keys), error)}"


def _step_problem(error: ErrorDetails) -> str:
    if error["type"] == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        return f"unknown step '{tag}' (known steps: {', '.join(STEPS)})"
    return error["msg"].removeprefix("Value error, ")


def _option_problem(kind: str, method: str | None, key: str, error: ErrorDetails) -> str:
    match error["type"]:
        case "value_error":
            return f"{key} {error['msg'].removeprefix('Value error, ')}"
        case "missing":
            return f"{key} {_MISSING.get(key, 'is missing')}"
        case "extra_forbidden" if method:
            return f"{key} is not a key of method {method} (keys: {_keys(CLIENTS[method])})"
        case "extra_forbidden":
            return f"unknown option {key} (known: {_keys(STEPS[kind], 'kind') or 'none'})"
        case "union_tag_invalid":
            return f"client.method {error.get('ctx', {}).get('tag')!r} is wrong: {CLIENT_METHOD}"
        case "union_tag_not_found":
            return f"client.method is missing: {CLIENT_METHOD}"
        case "dict_type" | "model_attributes_type":
            return f"{key} must be a table"
    return f"{key}: {error['msg']}"


def _keys(model: type[Model], *hidden: str) -> str:
    return ", ".join(name for name in model.model_fields if name not in hidden)
