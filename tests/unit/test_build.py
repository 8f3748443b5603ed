"""build: packer build streamed and logged, the artifact taken from the manifest, reuse by
digest."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest

from bake import freshness
from bake.console import Console
from bake.errors import StageFailed
from bake.inventory import Inventory
from bake.packages import Package, format_dpkg_query
from bake.records import Built, RunOptions, SourceImage
from bake.stages.build import Build, build_digest, inputs_digest
from bake.stages.render import render_image
from tests.unit.fake_archive import Mirror
from tests.unit.local_context import make_context

PACKER_OUTPUT = [
    "1700000000,,ui,say,==> qemu.base: Starting VM%!(PACKER_COMMA) booting disk image",
    "1700000001,,ui,say,==> qemu.base: Provisioning with shell script: patch.sh",
    "1700000002,,ui,message,    qemu.base: Setting up linux-image-6.1.0-56-cloud-amd64",
    "1700000003,qemu.base,artifact,0,id,VM",
]


def var(argv: list[str], name: str) -> str:
    values = [
        argv[i + 1].split("=", 1)[1]
        for i, arg in enumerate(argv)
        if arg == "-var" and argv[i + 1].startswith(name + "=")
    ]
    assert len(values) == 1, f"-var {name} given {len(values)} times"
    return values[0]


def fake_packer_build(argv: list[str]) -> None:
    """What packer build leaves behind: the disk in output_directory and the manifest."""
    output = Path(var(argv, "output_directory"))
    output.mkdir(parents=True)
    disk = output / "base.qcow2"
    disk.write_bytes(b"a built disk " + var(argv, "build_digest").encode())
    manifest = {
        "builds": [
            {
                "name": "base",
                "builder_type": "qemu",
                "artifact_id": "VM",
                "files": [{"name": str(disk), "size": 1}],
                "packer_run_uuid": "u1",
            }
        ],
        "last_run_uuid": "u1",
    }
    Path(var(argv, "manifest_path")).write_text(json.dumps(manifest))
    lists = Path(var(argv, "inventory_directory"))
    (lists / "source-packages.tsv").write_text(format_dpkg_query([OPENSSL_BEFORE]))
    (lists / "packages.tsv").write_text(format_dpkg_query([OPENSSL_AFTER, NGINX]))


OPENSSL_BEFORE = Package("openssl", "3.0.15-1~deb12u1", "amd64", "openssl", "3.0.15-1~deb12u1")
OPENSSL_AFTER = Package("openssl", "3.0.17-1~deb12u2", "amd64", "openssl", "3.0.17-1~deb12u2")
NGINX = Package("nginx", "1.22.1-9+deb12u2", "amd64", "nginx", "1.22.1-9+deb12u2")


# What the archive the patch step upgrades from has: a newer openssl in -security.
ARCHIVE = {
    "bookworm": ["openssl 3.0.15-1~deb12u1 amd64", "nginx 1.22.1-9+deb12u2 amd64"],
    "bookworm-updates": [],
    "bookworm-security": ["openssl 3.0.17-1~deb12u2 amd64"],
}


def publish(mirror: Mirror, suites: dict[str, list[str]]) -> None:
    for suite, packages in suites.items():
        archive = "debian-security" if suite.endswith("-security") else "debian"
        mirror.publish(suite, packages, archive=archive)


@pytest.fixture
def ctx(tmp_path: Path, mirror: Mirror):
    publish(mirror, ARCHIVE)
    local = {
        "mirror": f"{mirror.url}/debian",
        "security_mirror": f"{mirror.url}/debian-security",
        "archive_keyring": str(mirror.signer.keyring),
    }
    context = make_context(tmp_path, local=local)
    base = tmp_path / "base.qcow2"
    base.write_bytes(b"base disk")
    sha = hashlib.sha256(base.read_bytes()).hexdigest()
    context.target.source = SourceImage(
        "ami-0base",
        "debian:bookworm (ami-0base)",
        {"source_disk": str(base), "source_checksum": f"sha256:{sha}"},
        artifact=sha,
    )
    context.runner.on(
        lambda argv: argv[:2] == ["packer", "build"],
        stdout="\n".join(PACKER_OUTPUT),
        effect=fake_packer_build,
    )
    return context


def packer_builds(ctx) -> list[list[str]]:
    return [argv for argv in ctx.runner.commands("packer") if argv[1] == "build"]


def test_build_runs_packer_and_stores_the_artifact(ctx) -> None:
    outcome = Build(ctx).run()
    (argv,) = packer_builds(ctx)
    assert argv[2:4] == ["-machine-readable", "-color=false"]
    assert argv[-1] == str(ctx.state.rendered("base", "local"))
    assert var(argv, "source_ami") == "ami-0base"
    assert var(argv, "source_disk").endswith("base.qcow2")
    assert var(argv, "run_id") == "r1"
    (built,) = outcome.records
    assert isinstance(built, Built)
    stored = ctx.target.store.path(built.artifact)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == built.artifact
    assert built.source_ami == "ami-0base"
    (row,) = ctx.history.builds("base")
    assert row.built() == built and row.run_id == "r1"
    assert not (ctx.state.root / "work" / "build-base-r1").exists()


def test_the_same_inputs_are_not_built_twice(ctx) -> None:
    first = Build(ctx).run()
    ctx.run_id = "r2"
    second = Build(ctx).run()
    assert second.status == "skipped"
    assert "already built by run r1" in second.detail
    assert second.records == first.records
    assert len(packer_builds(ctx)) == 1


def test_rebuild_builds_anyway(ctx) -> None:
    Build(ctx).run()
    ctx.run_id, ctx.options = "r2", RunOptions(rebuild=True)
    assert Build(ctx).run().status == "succeeded"
    assert len(packer_builds(ctx)) == 2


def test_a_build_whose_artifact_is_gone_is_built_again(ctx) -> None:
    (built,) = Build(ctx).run().records
    path = ctx.target.store.path(built.artifact)
    path.chmod(0o644)
    path.unlink()
    ctx.run_id = "r2"
    assert Build(ctx).run().status == "succeeded"


def test_progress_shows_the_current_step(ctx) -> None:
    stream = io.StringIO()
    ctx.console = Console(stream)
    Build(ctx).run()
    shown = stream.getvalue()
    assert "packer build base [0s] Starting VM, booting disk image" in shown
    assert "Provisioning with shell script: patch.sh" in shown
    assert "Setting up linux-image" not in shown


def test_a_failed_packer_build_names_the_error_and_the_log(ctx) -> None:
    ctx.runner.on(
        lambda argv: argv[:2] == ["packer", "build"],
        returncode=1,
        stdout="\n".join(
            [
                "1700000000,,ui,say,==> qemu.base: Provisioning with shell script: patch.sh",
                "1700000001,,ui,error,an early complaint\\nwith a second line",
                "1700000002,,ui,error,Build 'qemu.base' errored: "
                "Script exited with non-zero exit status: 100\\nand more lines after it",
            ]
        ),
    )
    with pytest.raises(StageFailed) as raised:
        Build(ctx).run()
    assert raised.value.message.endswith(
        "Build 'qemu.base' errored: Script exited with non-zero exit status: 100"
    ), "the last error, its first line only"
    assert "build-base.log" in raised.value.format_message()
    assert not (ctx.state.root / "work" / "build-base-r1").exists()
    assert ctx.history.builds("base") == []


def test_the_digest_covers_every_input(ctx) -> None:
    rendered = render_image(ctx, ctx.require_image())
    source = ctx.target.source
    inputs = inputs_digest(rendered, "local")
    digest = build_digest(inputs, source, "updates=1")
    assert digest == build_digest(inputs_digest(rendered, "local"), source, "updates=1")
    assert digest != build_digest(inputs, source, "updates=2")
    assert digest != build_digest(inputs_digest(rendered, "aws"), source, "updates=1")
    other_source = SourceImage("ami-0base", "", {}, artifact="f" * 64)
    assert digest != build_digest(inputs, other_source, "updates=1")
    script = next(path for path in rendered.files if path.name == "harden.sh")
    script.write_text(script.read_text() + "\n# changed\n")
    assert inputs_digest(rendered, "local") != inputs


def test_without_a_patch_step_the_archive_does_not_matter(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, steps=["harden"])
    mirrors = ctx.target.mirrors()

    assert (
        freshness.patch_plan(ctx.require_image(), mirrors, ctx.state, [], print).digest_input == ""
    )


def test_the_digest_covers_the_template_text_and_the_names_of_files(ctx) -> None:
    rendered = render_image(ctx, ctx.require_image())
    inputs = inputs_digest(rendered, "local")
    retexted = dataclasses.replace(rendered, text=rendered.text + "\n# another line\n")
    assert inputs_digest(retexted, "local") != inputs
    script = rendered.files[0]
    renamed = script.with_name("renamed-" + script.name)
    shutil.copy(script, renamed)
    moved = dataclasses.replace(rendered, files=(renamed, *rendered.files[1:]))
    assert inputs_digest(moved, "local") != inputs


def test_a_new_update_in_the_archive_builds_again_and_nothing_new_reuses(ctx, mirror) -> None:
    first = Build(ctx).run()
    ctx.run_id = "r2"
    assert Build(ctx).run().status == "skipped", "the archive has nothing new: reused"

    publish(mirror, {"bookworm-security": ["openssl 3.0.18-1~deb12u1 amd64"]})
    (ctx.state.root / "archive" / "state.json").unlink()  # as if the cache had aged
    newer = dataclasses.replace(OPENSSL_AFTER, version="3.0.18-1~deb12u1")

    def patched_again(argv: list[str]) -> None:
        fake_packer_build(argv)
        lists = Path(var(argv, "inventory_directory"))
        (lists / "packages.tsv").write_text(format_dpkg_query([newer, NGINX]))

    ctx.runner.on(lambda argv: argv[:2] == ["packer", "build"], effect=patched_again)
    ctx.run_id = "r3"
    third = Build(ctx).run()

    assert third.status == "succeeded", "a new security update is a new input"
    assert third.records[0].digest != first.records[0].digest
    assert len(packer_builds(ctx)) == 2


def test_a_build_keeps_the_digest_of_its_inputs_alone(ctx) -> None:
    (built,) = Build(ctx).run().records

    assert built.inputs_digest == inputs_digest(render_image(ctx, ctx.require_image()), "local")
    assert ctx.history.builds("base")[0].built() == built


def test_an_archive_that_cannot_be_read_warns_and_builds(ctx, mirror) -> None:
    stream = io.StringIO()
    ctx.console = Console(stream)
    Build(ctx).run()
    mirror.server.shutdown()
    mirror.server.server_close()  # connections are refused, as by a mirror that is down
    (ctx.state.root / "archive" / "state.json").unlink()
    ctx.run_id = "r2"

    assert Build(ctx).run().status == "succeeded"
    assert "the archive's indexes cannot be read" in stream.getvalue()


def test_a_rotated_base_is_said(ctx) -> None:
    stream = io.StringIO()
    ctx.console = Console(stream)
    ctx.history.record_build("r0", Built("base", "d" * 64, "ami-0older", "a" * 64))
    ctx.history.record_verification("r0", "base", "a" * 64, "s", True, "6.1", None, "ok")
    Build(ctx).run()
    assert (
        "base rotated: base was last verified on ami-0older, its base is now ami-0base"
        in stream.getvalue()
    )
    stream.truncate(0)
    ctx.history.record_build("r1", Built("base", "e" * 64, "ami-0base", "b" * 64))
    ctx.history.record_verification("r1", "base", "b" * 64, "s", True, "6.1", None, "ok")
    ctx.run_id, ctx.options = "r2", RunOptions(rebuild=True)
    Build(ctx).run()
    assert "base rotated" not in stream.getvalue()


def test_the_build_records_what_it_made(ctx) -> None:
    (built,) = Build(ctx).run().records
    resources = ctx.history._read("SELECT kind, resource_id FROM resources WHERE run_id = 'r1'")
    assert [(row["kind"], row["resource_id"]) for row in resources] == [
        ("artifact", built.artifact)
    ]


def test_the_package_lists_of_the_image_and_its_source_are_recorded(ctx) -> None:
    stream = io.StringIO()
    ctx.console = Console(stream)

    (built,) = Build(ctx).run().records

    known = Inventory(ctx.history.path)
    assert known.packages(built.artifact) == [NGINX, OPENSSL_AFTER]
    assert known.packages(ctx.target.source.artifact) == [OPENSSL_BEFORE]
    assert "2 packages installed in base" in stream.getvalue()


def test_a_known_source_list_is_not_replaced_by_a_later_build(ctx) -> None:
    known = Inventory(ctx.history.path)
    known.record(ctx.target.source.artifact, "base-disk:debian-bookworm", [OPENSSL_AFTER])

    Build(ctx).run()

    assert known.packages(ctx.target.source.artifact) == [OPENSSL_AFTER]


def test_the_build_machine_goes_through_the_hosts_package_cache(ctx) -> None:
    Build(ctx).run()
    (argv,) = packer_builds(ctx)
    assert var(argv, "apt_proxy") == "http://10.0.2.2:3142/"
    rendered = ctx.state.rendered("base", "local").read_text()
    assert '"BAKE_APT_PROXY=${var.apt_proxy}"' in rendered
    assert 'disk_cache           = "unsafe"' in rendered


def test_the_updates_to_apply_are_said_before_the_build(ctx) -> None:
    Inventory(ctx.history.path).record(ctx.target.source.artifact, "base disk", [OPENSSL_BEFORE])
    stream = io.StringIO()
    ctx.console = Console(stream)

    Build(ctx).run()

    assert (
        "1 updates to apply: openssl 3.0.15-1~deb12u1 -> 3.0.17-1~deb12u2 (bookworm-security)"
        in stream.getvalue()
    )


def test_an_update_left_pending_fails_the_build_before_its_disk_is_kept(ctx) -> None:
    def unpatched(argv: list[str]) -> None:
        fake_packer_build(argv)
        lists = Path(var(argv, "inventory_directory"))
        (lists / "packages.tsv").write_text(format_dpkg_query([OPENSSL_BEFORE, NGINX]))

    ctx.runner.on(
        lambda argv: argv[:2] == ["packer", "build"],
        stdout="\n".join(PACKER_OUTPUT),
        effect=unpatched,
    )

    with pytest.raises(StageFailed) as raised:
        Build(ctx).run()

    assert raised.value.message == (
        "build: 1 updates still pending after the patch step: "
        "openssl 3.0.15-1~deb12u1 -> 3.0.17-1~deb12u2 (bookworm-security)"
    )
    assert ctx.history.builds("base") == []
    assert list(ctx.target.store.directory.rglob("*.qcow2")) == [], "no disk kept"


def test_an_image_without_a_patch_step_is_not_held_to_the_archive(tmp_path: Path, mirror) -> None:
    publish(mirror, ARCHIVE)
    ctx = make_context(
        tmp_path,
        local={
            "mirror": f"{mirror.url}/debian",
            "security_mirror": f"{mirror.url}/debian-security",
            "archive_keyring": str(mirror.signer.keyring),
        },
        steps=["harden"],
    )
    base = tmp_path / "base.qcow2"
    base.write_bytes(b"base disk")
    sha = hashlib.sha256(base.read_bytes()).hexdigest()
    ctx.target.source = SourceImage(
        "ami-0base", "", {"source_disk": str(base), "source_checksum": f"sha256:{sha}"}, sha
    )

    def unpatched(argv: list[str]) -> None:
        fake_packer_build(argv)
        lists = Path(var(argv, "inventory_directory"))
        (lists / "packages.tsv").write_text(format_dpkg_query([OPENSSL_BEFORE]))

    ctx.runner.on(lambda argv: argv[:2] == ["packer", "build"], effect=unpatched)

    assert Build(ctx).run().status == "succeeded"
