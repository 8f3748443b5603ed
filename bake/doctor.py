"""`bake doctor`: what this machine has, what it lacks, and how to install it."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

from bake import packer
from bake.app import App
from bake.errors import BakeError
from bake.packer import PackerVersion

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


def _packer(app: App) -> tuple[Check, PackerVersion | None]:
    """The packer check, and the version it found (None when there is none to read)."""
    if not shutil.which("packer"):
        return Check(
            "packer",
            False,
            "not found",
            f"{APT} packer (Debian) or install it from HashiCorp's apt repository",
        ), None
    try:
        version = packer.detect_version(app.runner)
    except BakeError as exc:
        return Check("packer", False, exc.message, "reinstall packer"), None
    plugins = (
        " (plugins are installed by `packer init` at render)"
        if version.has_required_plugins
        else ""
    )
    return Check("packer", True, f"{version}{plugins}"), version


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


HASHICORP_APT = "https://apt.releases.hashicorp.com"


def _packer_features(version: PackerVersion) -> Check:
    """What the amazon builder of the installed Packer cannot do (a warning: 1.6 still builds)."""
    if version.has_required_plugins:
        return Check("packer features", True, f"{version} has every feature the aws target uses")
    lacking = [
        "IMDSv2 on the build instance (metadata_options, imds_support)",
        "the amazon plugin pinned to a version (required_plugins)",
        "sharing with organizations (ami_org_arns)",
    ]
    return Check(
        "packer features",
        False,
        f"{version} lacks: {'; '.join(lacking)}",
        f"install Packer 1.7 or newer from HashiCorp's apt repository ({HASHICORP_APT})",
        required=False,
    )


def _session_manager_plugin() -> Check:
    """AWS's session-manager-plugin, which Packer and verification run for every SSH connection
    under ssh_interface = "session_manager" (no Debian package brings it)."""
    from bake.aws import ssm_proxy

    path = shutil.which(ssm_proxy.PLUGIN)
    if path:
        return Check(ssm_proxy.PLUGIN, True, path)
    return Check(
        ssm_proxy.PLUGIN,
        False,
        "not found, and ssh_interface is session_manager",
        f"{ssm_proxy.INSTALL_HINT} (not in Debian; it is AWS's own package)",
    )


def _aws_checks(app: App, version: PackerVersion | None) -> list[Check]:
    checks = [_packer_features(version)] if version else []
    if app.config.aws.session_manager:
        checks.append(_session_manager_plugin())
    try:
        identity = app.target.cloud.client("sts").get_caller_identity()
    except Exception as exc:  # any credential or network problem is the finding itself
        return [
            *checks,
            Check(
                "aws credentials",
                False,
                str(exc).splitlines()[0],
                "configure credentials: AWS_PROFILE, environment variables or an instance role",
            ),
        ]
    checks.append(Check("aws credentials", True, f"{identity['Arn']} in {app.config.region}"))
    return checks + _key_checks(app, identity["Arn"].split(":")[1], identity["Account"])


def _key_checks(app: App, partition: str, account: str) -> list[Check]:
    """Each customer key of an encrypted AMI: its policy must let the Auto Scaling service-linked
    role use the keys of the AMIs services run, and the accounts an AMI is shared with use it."""
    from bake.aws import kms

    launched = {service.image for service in app.config.services.values()}
    wanted: dict[tuple[str, str], list[kms.Principal]] = {}
    for image in app.config.images.values():
        if not image.aws.encrypt_boot:
            continue
        sharing = [kms.sharing_account(partition, user) for user in image.aws.ami_users]
        keys = [(app.config.region, image.aws.kms_key_id), *image.aws.region_kms_key_ids.items()]
        for region, key in keys:
            if key is None:
                continue
            principals = wanted.setdefault((region, key), [])
            if image.name in launched and region == app.config.region:
                principals.append(kms.autoscaling_role(partition, account))
            principals.extend(sharing)
    home = app.target.cloud
    checks = []
    for (region, key), principals in sorted(wanted.items()):
        cloud = home.in_region(region)
        found = kms.check(cloud, key, list(dict.fromkeys(principals)))
        name = f"kms key {key}" if region == home.region else f"kms key {key} ({region})"
        if found.error:
            checks.append(Check(name, False, found.error, "name a key that exists in " + region))
        elif found.missing:
            whom = ", ".join(
                next(p.why for p in principals if p.arn == arn) for arn in sorted(found.missing)
            )
            checks.append(
                Check(
                    name,
                    False,
                    f"{found.arn}: its key policy does not let these use it: {whom} "
                    f"({', '.join(sorted(found.missing))})",
                    "add to its key policy: " + json.dumps(found.statement()),
                )
            )
        else:
            users = ", ".join(p.why for p in principals) or "only this account uses it"
            checks.append(Check(name, True, f"{found.arn}: {users}"))
    return checks


def run_checks(app: App) -> list[Check]:
    packer_check, version = _packer(app)
    checks = [
        packer_check,
        _program("ssh", "openssh-client"),
        _program("ssh-keygen", "openssh-client"),
    ]
    if app.config.target == "local":
        checks += _local_checks(app)
    else:
        checks += _aws_checks(app, version)
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
