"""`bake doctor`: what this machine has, what it lacks, and how to install it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from bake import packer
from bake.app import App
from bake.errors import BakeError

APT = "apt-get install -y"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _program(name: str, package: str, required: bool = True) -> Check:
    path = shutil.which(name)
    if path:
        return Check(name, True, path, required=required)
    return Check(name, False, "not found", f"{APT} {package}", required)


def _packer(app: App) -> Check:
    if not shutil.which("packer"):
        return Check(
            "packer",
            False,
            "not found",
            f"{APT} packer (Debian) or install it from HashiCorp's apt repository",
        )
    try:
        version = packer.detect_version(app.runner)
    except BakeError as exc:
        return Check("packer", False, exc.message, "reinstall packer")
    plugins = (
        " (plugins are installed by `packer init` at render)"
        if version.has_required_plugins
        else ""
    )
    return Check("packer", True, f"{version}{plugins}")


def _local_checks(app: App) -> list[Check]:
    from bake.local import cloud, qemu

    checks = [
        _program("qemu-system-x86_64", "qemu-system-x86"),
        _program("qemu-img", "qemu-utils"),
        _program("mmdebstrap", "mmdebstrap"),
        _program("mke2fs", "e2fsprogs"),
    ]
    if app.config.local.machines:
        checks.append(_program("haproxy", "haproxy"))
    if checks[0].ok:
        probe = qemu.probe(app.runner, app.state.local)
        chosen = qemu.choose_accelerator(app.runner, app.state.local, app.config.local.accelerator)
        checks.append(
            Check("accelerator", True, f"{chosen} (probe: {probe.accelerator}, {probe.reason})")
        )
    info = cloud.status(app.state)
    detail = (
        f"running at {info['endpoint']}"
        if info["running"]
        else "not running (commands start it when needed, or run `bake local up`)"
    )
    checks.append(Check("local cloud", True, detail, required=False))
    if app.config.local.machines and app.config.services:
        checks.append(_memory(app))
    return checks


def _memory(app: App) -> Check:
    """Whether both colours of every service fit in this host's memory."""
    from bake.local import dataplane

    need = dataplane.memory_need(app.config)
    try:
        dataplane.check_memory(app.config, app.state)
    except BakeError as exc:
        return Check("memory", False, exc.message, exc.hint or "")
    return Check(
        "memory",
        True,
        f"{need.total} MiB for {need.machines} service machines and a build machine "
        f"({dataplane.available_memory()} MiB available)",
    )


def _aws_checks(app: App) -> list[Check]:
    try:
        identity = app.target.cloud.client("sts").get_caller_identity()
    except Exception as exc:  # any credential or network problem is the finding itself
        return [
            Check(
                "aws credentials",
                False,
                str(exc).splitlines()[0],
                "configure credentials: AWS_PROFILE, environment variables or an instance role",
            )
        ]
    return [Check("aws credentials", True, f"{identity['Arn']} in {app.config.region}")]


def run_checks(app: App) -> list[Check]:
    checks = [
        _packer(app),
        _program("ssh", "openssh-client"),
        _program("ssh-keygen", "openssh-client"),
    ]
    if app.config.target == "local":
        checks += _local_checks(app)
    else:
        checks += _aws_checks(app)
    if any(image.has_step("chef") for image in app.config.images.values()):
        checks += _cookbook_checks(app)
    return checks


def _cookbook_checks(app: App) -> list[Check]:
    from bake import cookbooks

    ruby = _program("ruby", "ruby")
    if not ruby.ok:
        return [ruby]
    try:
        cookbooks.check_cookbooks(app.runner, app.config.cookbooks_path)
    except BakeError as exc:
        return [ruby, Check("cookbooks", False, exc.message, "fix the cookbooks named above")]
    return [ruby, Check("cookbooks", True, f"{app.config.cookbooks_path} passes its checks")]
