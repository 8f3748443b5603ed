"""The `bake` command. Commands parse their options and call the App; they hold no logic.

Exit codes: 0 success; 1 a stage failed; 2 bad input (usage or config), nothing done;
3 another run holds the lock.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bake import signals
from bake.console import duration
from bake.errors import BakeError, Cancelled, ChecksFailed
from bake.records import AlreadyLive, Released, RunOptions, Traffic, VerifiedAmi

if TYPE_CHECKING:
    from bake.app import App
    from bake.pipeline import RunResult

# The App (and with it boto3, the stages and the targets) is imported when a command runs, not
# for `bake --help` or a usage error: the root command puts it in the context for every command.
pass_app = click.pass_obj


def json_flag(command: Any) -> Any:
    """`--json` after the command too (`bake status demo --json`), same as before it."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.obj.json_output = True

    return click.option(
        "--json",
        "json_after",
        is_flag=True,
        expose_value=False,
        callback=set_json,
        help="Print the result as JSON.",
    )(command)


def emit(app: App, result: Any, human: str) -> None:
    if app.json_output:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(human)


def emit_rollout(app: App, service: str, result: RunResult) -> None:
    if already := result.records.get(AlreadyLive):
        human = f"{service}: already live: {already.live_color} runs {already.ami}; nothing changed"
        emit(app, result.to_dict(), f"{human} (run {result.run_id})")
        return
    traffic, rolled_out = result.records.get(Traffic), result.records.get(VerifiedAmi)
    live = traffic.live_color if traffic else None
    ami = (traffic and traffic.ami) or (rolled_out.ami if rolled_out else None)
    shipped = result.records.get(Released)
    with_release = f" with release {shipped.release.version}" if shipped else ""
    emit(
        app,
        result.to_dict(),
        f"{service}: {live} is live on {ami}{with_release} (run {result.run_id})",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="The config file (default: bake.toml, or $BAKE_CONFIG).",
)
@click.option("--json", "json_output", is_flag=True, help="Print results as JSON on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="goldenbake")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, json_output: bool, debug: bool) -> None:
    """Bake golden images, prove them on a fresh boot, and roll them out blue/green."""
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    from bake.app import App

    ctx.obj = App(config_path, json_output=json_output, debug=debug)


def _image_command(command: str, summary: str, *extra_options: Any) -> None:
    def handler(app: App, image: str, rebuild: bool = False, reverify: bool = False) -> None:
        options = RunOptions(rebuild=rebuild, reverify=reverify)
        result = app.run(command, image=image, options=options)
        emit(app, result.to_dict(), f"{command} {image}: {result.status} (run {result.run_id})")

    handler.__doc__ = summary
    for option in extra_options:
        handler = option(handler)
    cli.command(command)(json_flag(click.argument("image")(pass_app(handler))))


_image_command("render", "Render IMAGE's Packer template and validate it.")
_image_command(
    "build",
    "Render and build IMAGE with Packer (reused when its inputs were built already).",
    click.option("--rebuild", is_flag=True, help="Build even if reusable."),
)
_image_command(
    "verify",
    "Boot a fresh machine from IMAGE's newest build and run its testinfra suites.",
    click.option(
        "--again",
        "reverify",
        is_flag=True,
        help="Verify even if these suites passed on this build before.",
    ),
)
_image_command("register", "Tag IMAGE's newest verified build and publish it as the latest.")


@cli.command("bake-and-swap")
@click.argument("service")
@click.option("--rebuild", is_flag=True, help="Build and verify even if reusable.")
@json_flag
@pass_app
def bake_and_swap(app: App, service: str, rebuild: bool) -> None:
    """Bake SERVICE's image, verify, register, and roll it out blue/green."""
    options = RunOptions(rebuild=rebuild, reverify=rebuild)
    emit_rollout(app, service, app.run("bake-and-swap", service=service, options=options))


@cli.command("rollout")
@click.argument("images", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every image and every service.")
@click.option("--service", "services", multiple=True, help="Only this service (repeatable).")
@click.option(
    "--require-kernel",
    metavar="VERSION",
    help="Every instance must run at least this kernel (a Debian version, e.g. 6.1.119-1).",
)
@click.option("--rebuild", "rebuild", multiple=True, metavar="IMAGE", help="Bake IMAGE anyway.")
@click.option("--swap-only", is_flag=True, help="Bake nothing; roll published AMIs out.")
@click.option("--no-proof", is_flag=True, help="Do not ask the instances what they run.")
@click.option("--parallel", default=1, show_default=True, type=click.IntRange(1, 50))
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write report.json and report.html into this directory.",
)
@json_flag
@pass_app
def rollout(
    app: App,
    images: tuple[str, ...],
    all_: bool,
    services: tuple[str, ...],
    require_kernel: str | None,
    rebuild: tuple[str, ...],
    swap_only: bool,
    no_proof: bool,
    parallel: int,
    dry_run: bool,
    report_dir: Path | None,
) -> None:
    """Bake the stale images (parents first), swap every service that runs them, and prove what
    each instance runs."""
    from bake.campaigns import describe
    from bake.campaigns.plan import Selection
    from bake.campaigns.run import RolloutOptions, execute

    selection = Selection(images, services, all_, rebuild, swap_only, require_kernel)
    options = RolloutOptions(selection, parallel, not no_proof, dry_run, report_dir)
    outcome = execute(app, options)
    emit(app, describe.as_dict(outcome), describe.as_text(outcome))
    if outcome.failed:
        raise RolloutFailed("the rollout failed; see above" + describe.where(outcome))


class RolloutFailed(BakeError):
    """Something in a rollout failed; what did not is done (exit 1)."""


@cli.command()
@click.argument("service")
@click.option("--ami", help="The verified AMI to roll out (default: the image's published latest).")
@json_flag
@pass_app
def swap(app: App, service: str, ami: str | None) -> None:
    """Roll a verified AMI out to SERVICE's standby colour and shift traffic to it."""
    emit_rollout(app, service, app.run("swap", service=service, options=RunOptions(ami=ami)))


@cli.command()
@click.argument("service")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--version", "version", help="The release's version (default: its content's hash).")
@click.option("--no-swap", is_flag=True, help="Store and record the release; roll nothing out.")
@json_flag
@pass_app
def release(app: App, service: str, path: Path, version: str | None, no_swap: bool) -> None:
    """Ship PATH (a directory or a .tar.gz) as SERVICE's application: stored in its release
    store, then rolled out blue/green on the same AMI."""
    from bake import releases

    releases.check_image_pulls(app.config, app.config.service(service))
    if version is not None:
        releases.check_version(version)
    if not path.exists():
        raise click.BadParameter(f"{path} does not exist", param_hint="PATH")
    options = RunOptions(release_path=path.resolve(), release_version=version)
    result = app.run("release-only" if no_swap else "release", service=service, options=options)
    shipped = result.records.get(Released)
    if no_swap and shipped:
        emit(
            app,
            result.to_dict(),
            f"{service}: release {shipped.release.version} stored at {shipped.release.location} "
            f"(run {result.run_id}); nothing rolled out",
        )
        return
    emit_rollout(app, service, result)


@cli.command()
@click.argument("service")
@json_flag
@pass_app
def rollback(app: App, service: str) -> None:
    """Send SERVICE's traffic back to its standby colour."""
    result = app.run("rollback", service=service)
    traffic = result.records.need(Traffic, "rollback")
    with_release = f" with release {traffic.release}" if traffic.release else ""
    emit(
        app,
        result.to_dict(),
        f"{service}: {traffic.live_color} is live again on {traffic.ami}{with_release}",
    )


@cli.command()
@click.argument("service")
@json_flag
@pass_app
def status(app: App, service: str) -> None:
    """Show which colour of SERVICE is live, on which AMI, and its standby."""
    from bake import bluegreen
    from bake import plan as plan_module

    service_config = app.config.service(service)
    app.target.prepare()  # a service's status includes its machines, started if the host stopped
    state = bluegreen.describe(app.target.cloud, service_config)
    image = plan_module.plan_image(app.config, app.target, service_config.image)
    lines = [f"service {service}"]
    for role, colour in (("live", state.live), ("standby", state.standby)):
        if colour is None:
            lines.append(f"  {role}: none")
            continue
        release = f"release={colour.release} " if colour.release else ""
        lines.append(
            f"  {role}: {colour.color} asg={colour.asg} ami={colour.ami} {release}"
            f"launch-template-version={colour.launch_template_version} "
            f"weight={colour.weight} healthy={colour.healthy}/{colour.desired}"
        )
    rollout = rollout_status(app, state)
    if rollout:
        lines.append(f"  rollout: {rollout['summary']}")
        lines.append(f"    next: {rollout['next']}")
    lines.append(f"  image {image.image}: {image.action} ({image.reason})")
    emit(app, {**state.to_dict(), "rollout": rollout, "image": image.to_dict()}, "\n".join(lines))


def rollout_status(app: App, state: Any) -> dict[str, Any] | None:
    """The service's recorded rollout, why it ended as it did (from this machine's history), and
    what the next swap or rollback will do."""
    rollout = state.rollout
    if rollout is None:
        return None
    entry = app.history.rollout(state.service, rollout.run_id)
    reason = entry.reason if entry else None
    name = state.service
    incoming, back = rollout.incoming, rollout.rollback
    at = f"{incoming} {state.share(incoming):.0f}%, {back} {state.share(back):.0f}%"
    if rollout.pending:
        summary = (
            f"run {rollout.run_id}'s rollout of {rollout.ami} to {incoming} is unfinished "
            f"(interrupted, unless a run of {name} is at it now): {at}"
        )
        upcoming = (
            f"`bake swap {name} --ami {rollout.ami}` resumes it from {at}; `bake rollback "
            f"{name}` sends all traffic to {back} ({rollout.rollback_ami}); a swap of another AMI "
            + (
                "is refused while " + incoming + " carries traffic"
                if state.weight(incoming)
                else f"replaces it, keeping {back} for rollback"
            )
        )
    elif rollout.state == "live":
        summary = f"run {rollout.run_id} rolled {rollout.ami} out to {incoming}"
        upcoming = f"`bake rollback {name}` sends all traffic to {back} ({rollout.rollback_ami})"
    elif rollout.state == "rolled-back":
        summary = (
            f"run {rollout.run_id}'s rollout of {rollout.ami} to {incoming} was rolled back to "
            f"{back}" + (f": {reason}" if reason else "")
        )
        upcoming = f"a swap starts a new rollout; `bake rollback {name}` is refused (roll forward)"
    else:
        summary = (
            f"run {rollout.run_id}'s rollout of {rollout.ami} to {incoming} failed before any "
            "traffic moved" + (f": {reason}" if reason else "")
        )
        upcoming = "a swap starts a new rollout"
    return {**rollout.to_dict(), "reason": reason, "summary": summary, "next": upcoming}


@cli.command()
@click.argument("image")
@click.option("--keep", default=3, show_default=True, help="How many newest verified AMIs to keep.")
@click.option("--dry-run", is_flag=True, help="Only list what would be retired.")
@json_flag
@pass_app
def retire(app: App, image: str, keep: int, dry_run: bool) -> None:
    """Deregister IMAGE's old AMIs and delete their snapshots (never one in use)."""
    if keep < 1:
        raise click.BadParameter("must be at least 1", param_hint="--keep")
    result = app.run("retire", image=image, options=RunOptions(keep=keep, dry_run=dry_run))
    emit(
        app,
        result.to_dict().get("decisions", []),
        f"{image}: {result.status} (run {result.run_id})",
    )


@cli.command()
@json_flag
@pass_app
def plan(app: App) -> None:
    """Show, for each image, what a bake would start from and whether it is stale."""
    from bake import plan as plan_module

    app.target.prepare(machines=False)
    plans = plan_module.plan(app.config, app.target)
    lines = [f"{p.image:<12} {p.action:<11} {p.reason}" for p in plans]
    emit(app, [p.to_dict() for p in plans], "\n".join(lines))


@cli.command("iam-policy")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["policy", "cloudformation"]),
    default="policy",
    show_default=True,
    help="The policy, or a CloudFormation template of the lock table and a role holding it.",
)
@json_flag
@pass_app
def iam_policy(app: App, output_format: str) -> None:
    """Print the least-privilege IAM policy that running the pipeline on AWS needs."""
    from bake import cloudformation, iam

    if output_format == "cloudformation":
        template = cloudformation.fleet_template(app.config)
        emit(app, template, cloudformation.fleet_yaml(app.config).rstrip("\n"))
        return
    document = iam.policy(app.config)
    human = "\n".join(iam.describe(statement) for statement in document["Statement"])
    emit(app, document, human + "\n\n(use --json for the policy document)")


@cli.command()
@click.option("--limit", default=20, show_default=True, help="How many runs to show.")
@click.option("--releases", "show_releases", is_flag=True, help="List releases instead of runs.")
@click.option("--service", help="With --releases: only this service's.")
@json_flag
@pass_app
def history(app: App, limit: int, show_releases: bool, service: str | None) -> None:
    """List recent runs, their stages and timings (or, with --releases, the releases stored)."""
    if show_releases:
        from bake import releases

        if service is not None:
            app.config.service(service)
        listed = releases.ReleaseBook(app.history.path).listed(service, limit)
        shown = [
            f"{entry['created'][:19]}  {entry['service']:<12} {entry['version']:<24} "
            f"{entry['sha256'][:12]}  {entry['size']:>10}  {entry['location']}"
            for entry in listed
        ]
        emit(app, listed, "\n".join(shown) or "no releases yet")
        return
    if service is not None:
        raise click.UsageError("--service goes with --releases")
    runs = app.history.runs(limit)
    lines = []
    for run in runs:
        took = duration(run.seconds) if run.seconds is not None else "-"
        lines.append(
            f"{run.run_id}  {run.command:<13} {run.subject:<10} "
            f"{run.status:<11} {took:>7}  {run.ami or ''}"
        )
        for stage in run.stages:
            seconds = duration(stage.seconds) if stage.seconds is not None else "-"
            lines.append(f"    {stage.name:<16} {stage.status:<10} {seconds:>7}")
    emit(app, [run.to_dict() for run in runs], "\n".join(lines) or "no runs yet")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be released.")
@json_flag
@pass_app
def recover(app: App, dry_run: bool) -> None:
    """Release what runs that died left behind, and mark them abandoned."""
    from bake.recover import abandoned

    recovery = app.recoverer.recover(abandoned(app.history), dry_run=dry_run)
    verb = "would release" if dry_run else "released"
    lines = [
        f"{verb} {action.kind} {action.id} (run {action.run_id})" for action in recovery.released
    ]
    lines += [
        f"left {action.kind} {action.id} (run {action.run_id}): {action.outcome}"
        for action in recovery.left
    ]
    summary = f"{len(recovery.runs)} abandoned run(s)" + ("" if dry_run else " recovered")
    emit(app, recovery.to_dict(), "\n".join([*lines, summary]))


@cli.group()
def local() -> None:
    """The embedded local target: a moto server on 127.0.0.1 and QEMU machines."""


@local.command("up")
@json_flag
@pass_app
def local_up(app: App) -> None:
    """Start the local cloud, seed every service's blue environment, start its machines."""
    app.target.prepare()
    info = local_status_of(app)
    emit(app, info, describe_local(info))


@local.command("down")
@json_flag
@pass_app
def local_down(app: App) -> None:
    """Stop the machines, the load balancer, the package cache and the local cloud. History,
    images and cached packages are kept."""
    from bake.local import cloud, dataplane, packagecache

    machines = dataplane.down(app.runner, app.state, app.config)
    packagecache.down(app.state)
    stopped = cloud.down(app.state)
    emit(
        app,
        {"stopped": stopped, "machines_stopped": machines},
        "local cloud stopped" if stopped or machines else "local cloud was not running",
    )


@local.command("status")
@json_flag
@pass_app
def local_status(app: App) -> None:
    """Show the local cloud, each service's URL, and the machines."""
    info = local_status_of(app)
    emit(app, info, describe_local(info))


def local_status_of(app: App) -> dict[str, Any]:
    """The local cloud's status with the data plane's `services` and `machines`."""
    from bake.local import cloud, dataplane, packagecache

    info = cloud.status(app.state)
    plane = dataplane.status(app.state)
    return {
        **info,
        "data_plane": {"running": plane["running"], "log": plane["log"]},
        "package_cache": packagecache.status(app.state),
        "services": plane["services"],
        "machines": plane["machines"],
    }


MACHINE_COLUMNS = ("instance_id", "service", "color", "ami", "pid", "ssh_port", "http_port")


def describe_local(info: dict[str, Any]) -> str:
    """`bake local status` for people: the cloud, each service's URL, a table of machines."""
    if not info["running"]:
        return "local cloud not running"
    lines = [f"local cloud running at {info['endpoint']} ({info['region']}, pid {info['pid']})"]
    if not info["data_plane"]["running"]:
        lines.append("data plane not running (no machines, no load balancer)")
    cache = info.get("package_cache") or {}
    if cache.get("running"):
        lines.append(f"package cache at 127.0.0.1:{cache['port']} (files in {cache['directory']})")
    for name, service in sorted(info["services"].items()):
        lines.append(f"service {name} at {service['url']}")
    rows = [[*MACHINE_COLUMNS, "state", "health"]]
    for machine in info["machines"]:
        rows.append(
            [str(machine.get(key) if machine.get(key) is not None else "-")
             for key in (*MACHINE_COLUMNS, "state", "health")]
        )  # fmt: skip
    if len(rows) > 1:
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                  .rstrip() for row in rows]  # fmt: skip
    else:
        lines.append("no machines")
    return "\n".join(lines)


@cli.command()
@json_flag
@pass_app
def doctor(app: App) -> None:
    """Check what the toolkit needs on this machine and say how to install what is missing."""
    from bake import doctor as doctor_module

    checks = doctor_module.run_checks(app)
    lines = [
        f"{'ok ' if check.ok else 'MISSING'} {check.name}: {check.detail}"
        + ("" if check.ok or not check.fix else f"  -> {check.fix}")
        for check in checks
    ]
    emit(app, [check.__dict__ for check in checks], "\n".join(lines))
    missing = [check.name for check in checks if check.required and not check.ok]
    if missing:
        raise ChecksFailed(
            f"{len(missing)} required check(s) failed: {', '.join(missing)}",
            hint="install what is missing as shown above",
        )


# Signals that end a run as Ctrl-C does: a cancelled CI job (SIGTERM), a closed terminal (SIGHUP).
def main(argv: list[str] | None = None) -> int:
    """Entry point: one line per error, the right exit code, tracebacks only with --debug."""
    args = sys.argv[1:] if argv is None else argv
    previous = {stop: signal.signal(stop, signals.cancel) for stop in signals.STOP_SIGNALS}
    try:
        code = cli.main(args=args, prog_name="bake", standalone_mode=False)
    except BaseException as exc:  # the one place every failure becomes a line and an exit code
        return report(exc, debug="--debug" in args)
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)
    return code if isinstance(code, int) else 0


def report(exc: BaseException, *, debug: bool) -> int:
    """Print one line for `exc` on stderr and give the exit code it calls for."""
    if "botocore" in sys.modules:  # a cloud's error can only come once botocore is imported
        from bake.aws.errors import cloud_error

        exc = cloud_error(exc) or exc
    if isinstance(exc, click.exceptions.Abort | KeyboardInterrupt):  # click turns ^C into Abort
        click.echo("error: interrupted; the interrupted stage was undone", err=True)
        return 130
    if isinstance(exc, Cancelled):
        click.echo(f"error: {exc}; the running stage was undone", err=True)
        return exc.exit_code
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    if debug:
        traceback.print_exc()
    if isinstance(exc, BakeError | click.ClickException):
        hint = " (run bake --help)" if isinstance(exc, click.UsageError) else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        return exc.exit_code
    click.echo(
        f"error: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
        err=True,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
