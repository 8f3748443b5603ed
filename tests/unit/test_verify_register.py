"""verify and register, against an in-process moto server: the machine and pytest are stood in
for behind the runner; tags, parameters and history are real."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bake.aws import images
from bake.errors import StageFailed
from bake.records import Built, Records, Verification
from bake.ssh import SshHost
from bake.stages.register import Register
from bake.stages.verify import Verify, read_junit, suite_files, suites_digest
from tests.unit.local_context import StubbedLocalTarget, make_context

JUNIT_PASS = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="0" skipped="0" tests="3">
<testcase classname="test_patched" name="test_kernel"/><testcase classname="a" name="b"/>
<testcase classname="a" name="c"/></testsuite></testsuites>"""

JUNIT_FAIL = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="2">
<testcase classname="test_extra" name="test_always_fails"><failure message="no"/></testcase>
<testcase classname="a" name="b"/></testsuite></testsuites>"""


class MachineTarget(StubbedLocalTarget):
    """Boots nothing: `machine()` hands out an address and counts the boots."""

    boots = 0

    @contextmanager
    def machine(self, built, image, **run) -> Iterator[SshHost]:
        self.boots += 1
        yield SshHost("127.0.0.1", 2222, "root", Path("/keys/id"), Path("/keys/config"))


def junit_writer(body: str):
    def write(argv: list[str]) -> None:
        path = next(arg.split("=", 1)[1] for arg in argv if arg.startswith("--junitxml="))
        Path(path).write_text(body)

    return write


@pytest.fixture
def ctx(tmp_path: Path, cloud):
    context = make_context(tmp_path)
    target = MachineTarget(
        context.config, context.state, context.history, context.runner, context.console
    )
    target._cloud = cloud
    context.target = target
    disk = tmp_path / "built.qcow2"
    disk.write_bytes(b"a built image")
    sha = target.store.put(disk, "base")
    context.history.record_build("r0", Built("base", "d" * 64, "ami-0source", sha))
    (tmp_path / "suites" / "test_one.py").write_text("def test_one(host):\n    pass\n")
    context.runner.on("ssh", stdout="6.1.0-56-cloud-amd64\n")
    return context


def pytest_calls(ctx) -> list[tuple[list[str], dict[str, str]]]:
    return [
        (argv, env)
        for argv, env in zip(ctx.runner.calls, ctx.runner.environments, strict=True)
        if argv[1:3] == ["-m", "pytest"]
    ]


def pass_suites(ctx) -> None:
    ctx.runner.on(
        lambda argv: argv[1:3] == ["-m", "pytest"], returncode=0, effect=junit_writer(JUNIT_PASS)
    )


def fail_suites(ctx) -> None:
    ctx.runner.on(
        lambda argv: argv[1:3] == ["-m", "pytest"], returncode=1, effect=junit_writer(JUNIT_FAIL)
    )


def test_verify_runs_the_suites_on_a_fresh_machine(ctx) -> None:
    pass_suites(ctx)
    outcome = Verify(ctx).run()
    assert ctx.target.boots == 1
    ((argv, env),) = pytest_calls(ctx)
    assert (
        "--hosts=ssh://root@127.0.0.1:2222?ssh_identity_file=/keys/id&ssh_config=/keys/config"
        in argv
    )
    assert argv[-1] == str(ctx.config.root / "suites")
    assert env["BAKE_EXPECT_DIGEST"] == "d" * 64
    assert env["BAKE_EXPECT_SOURCE_AMI"] == "ami-0source"
    assert env["BAKE_EXPECT_IMAGE"] == "base"
    (verification,) = outcome.records
    assert isinstance(verification, Verification)
    assert verification.kernel == "6.1.0-56-cloud-amd64"
    assert outcome.outputs()["verified"] is True
    assert "3 checks, 0 failed" in outcome.detail


def test_verify_is_not_repeated_for_the_same_build_and_suites(ctx) -> None:
    pass_suites(ctx)
    Verify(ctx).run()
    ctx.run_id = "r2"
    again = Verify(ctx).run()
    assert again.status == "skipped"
    assert again.outputs()["kernel"] == "6.1.0-56-cloud-amd64"
    assert ctx.target.boots == 1


def test_changed_suites_are_verified_again(ctx) -> None:
    pass_suites(ctx)
    Verify(ctx).run()
    (ctx.config.root / "suites" / "test_two.py").write_text("def test_two(host):\n    pass\n")
    ctx.run_id = "r2"
    assert Verify(ctx).run().status == "succeeded"
    assert ctx.target.boots == 2


def test_a_failed_verification_tags_the_ami_unverified_and_publishes_nothing(ctx, cloud) -> None:
    fail_suites(ctx)
    with pytest.raises(
        StageFailed, match=r"2 checks, 1 failed, 0 errors \(test_extra::test_always_fails\)"
    ):
        Verify(ctx).run()
    ami = ctx.target.store.ami(ctx.history.builds("base")[0].artifact)
    tags = images.tags_of(images.describe(cloud, ami))
    assert tags["bake:verified"] == "false"
    assert tags["bake:digest"] == "d" * 64
    assert tags["bake:source-ami"] == "ami-0source"
    assert images.published(cloud, "base") is None
    with pytest.raises(StageFailed, match="has not passed its suites"):
        Register(ctx).run()
    assert images.published(cloud, "base") is None


def test_register_tags_lineage_and_publishes_the_verified_ami(ctx, cloud) -> None:
    pass_suites(ctx)
    ctx.records.add(*Verify(ctx).run().records)
    outcome = Register(ctx).run()
    ami = outcome.outputs()["ami"]
    assert images.published(cloud, "base") == ami
    tags = images.tags_of(images.describe(cloud, ami))
    assert tags["bake:verified"] == "true"
    assert tags["bake:digest"] == "d" * 64
    assert tags["bake:source-ami"] == "ami-0source"
    assert tags["bake:kernel"] == "6.1.0-56-cloud-amd64"
    assert ctx.history.builds("base")[0].ami == ami


def test_register_alone_uses_the_recorded_verification(ctx, cloud) -> None:
    pass_suites(ctx)
    Verify(ctx).run()
    ctx.records, ctx.run_id = Records(), "r2"
    first = Register(ctx).run()
    assert first.status == "succeeded"
    assert images.tags_of(images.describe(cloud, first.outputs()["ami"]))["bake:kernel"] == (
        "6.1.0-56-cloud-amd64"
    )
    second = Register(ctx).run()
    assert second.status == "skipped"
    assert second.outputs()["ami"] == first.outputs()["ami"]


def test_register_refuses_an_unverified_build(ctx) -> None:
    with pytest.raises(StageFailed, match="has not passed its suites"):
        Register(ctx).run()


def test_verify_without_any_build_says_what_to_run(tmp_path: Path, cloud) -> None:
    context = make_context(tmp_path)
    context.target._cloud = cloud
    context.stage = "verify"
    with pytest.raises(StageFailed, match="has no build to use .*bake build base"):
        Verify(context).run()


def test_junit_reports_are_read(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    path.write_text(JUNIT_FAIL)
    report = read_junit(path)
    assert (report.tests, report.failures, report.passed) == (2, 1, False)
    assert report.failed == ("test_extra::test_always_fails",)
    assert read_junit(tmp_path / "absent.xml").passed is False


def test_the_suites_are_their_files_and_the_conftests_above_them_up_to_the_project(
    tmp_path: Path,
) -> None:
    context = make_context(tmp_path)
    (tmp_path / "conftest.py").write_text("# the project's\n")
    (tmp_path / "suites" / "conftest.py").write_text("# the suites'\n")
    (tmp_path / "suites" / "test_one.py").write_text("def test_one(host):\n    pass\n")
    (tmp_path.parent / "conftest.py").write_text("# outside the project\n")
    try:
        files = suite_files(context)
    finally:
        (tmp_path.parent / "conftest.py").unlink()
    assert files == sorted(
        [
            tmp_path / "conftest.py",
            tmp_path / "suites" / "conftest.py",
            tmp_path / "suites" / "test_one.py",
        ]
    )


def test_the_suites_digest_covers_their_paths_and_contents(tmp_path: Path) -> None:
    first, second = tmp_path / "test_a.py", tmp_path / "test_b.py"
    first.write_text("def test_a(host):\n    pass\n")
    second.write_text("def test_a(host):\n    pass\n")
    assert suites_digest([first]) != suites_digest([second]), "the path counts"
    before = suites_digest([first])
    first.write_text("def test_a(host):\n    assert True\n")
    assert suites_digest([first]) != before, "the content counts"
    assert suites_digest([first]) == suites_digest([first])


def fail_with(ctx, body: str) -> None:
    ctx.runner.on(
        lambda argv: argv[1:3] == ["-m", "pytest"], returncode=1, effect=junit_writer(body)
    )


def test_a_failure_names_three_failed_checks_and_says_there_are_more(ctx) -> None:
    cases = "".join(
        f'<testcase classname="t" name="c{n}"><failure message="no"/></testcase>' for n in range(4)
    )
    body = (
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" '
        f'failures="4" tests="4">{cases}</testsuite></testsuites>'
    )
    ctx.runner.on(
        lambda argv: argv[1:3] == ["-m", "pytest"], returncode=1, effect=junit_writer(body)
    )
    with pytest.raises(StageFailed) as raised:
        Verify(ctx).run()
    assert "(t::c0, t::c1, t::c2 ...)" in raised.value.message
    three = body.replace('<testcase classname="t" name="c3"><failure message="no"/></testcase>', "")
    three = three.replace('failures="4" tests="4"', 'failures="3" tests="3"')
    ctx.runner.on(
        lambda argv: argv[1:3] == ["-m", "pytest"], returncode=1, effect=junit_writer(three)
    )
    ctx.run_id = "r2"
    with pytest.raises(StageFailed) as raised:
        Verify(ctx).run()
    assert "(t::c0, t::c1, t::c2);" in raised.value.message


def test_the_suites_run_with_xunit2_reports_and_the_kernel_is_asked_once(ctx) -> None:
    pass_suites(ctx)
    Verify(ctx).run()
    ((argv, _env),) = pytest_calls(ctx)
    ini = Path(argv[argv.index("-c") + 1])
    assert ini.read_text() == "[pytest]\njunit_family = xunit2\n"
    assert [argv[-1] for argv in ctx.runner.commands("ssh")] == ["uname -r"]


def test_register_publishes_again_when_the_tag_was_lost(ctx, cloud) -> None:
    pass_suites(ctx)
    ctx.records.add(*Verify(ctx).run().records)
    ami = Register(ctx).run().outputs()["ami"]
    images.tag(cloud, ami, {"bake:verified": "false"})
    again = Register(ctx).run()
    assert again.status == "succeeded"
    assert images.tags_of(images.describe(cloud, ami))["bake:verified"] == "true"
    cloud.client("ssm").delete_parameter(Name="/bake/images/base/latest")
    assert Register(ctx).run().status == "succeeded"
    assert images.published(cloud, "base") == ami


def test_a_missing_report_is_one_error_and_absent_counts_are_zero(tmp_path: Path) -> None:
    assert read_junit(tmp_path / "absent.xml").summary() == "0 checks, 0 failed, 1 errors"
    path = tmp_path / "bare.xml"
    path.write_text(
        '<testsuite name="pytest" tests="2"><testcase classname="a" name="b"/>'
        '<testcase classname="a" name="c"/></testsuite>'
    )
    report = read_junit(path)
    assert (report.tests, report.failures, report.errors, report.passed) == (2, 0, 0, True)
    path.write_text('<testsuites><testsuite name="pytest"/></testsuites>')
    assert read_junit(path).summary() == "0 checks, 0 failed, 0 errors"


@pytest.fixture
def local_build(tmp_path: Path, cloud):
    """A local-target context on the test's moto server, and a build whose disk is in the store."""
    ctx = make_context(tmp_path)
    ctx.target._cloud = cloud
    disk = tmp_path / "built.qcow2"
    disk.write_bytes(b"a built image")
    return ctx, Built("base", "d" * 64, "ami-0source", ctx.target.store.put(disk, "base"))


def test_the_local_verification_machine_is_recorded_before_ssh_is_awaited(local_build) -> None:
    ctx, built = local_build
    recorded: list[tuple[str, str, int]] = []

    def record(kind: str, resource_id: str) -> None:
        recorded.append((kind, resource_id, len(ctx.runner.commands("ssh"))))

    with ctx.target.machine(built, ctx.require_image(), run_id="r1", record=record):
        pass

    (machine,) = ctx.runner.processes
    assert recorded == [("qemu-machine", str(machine.pid), 0)]
    assert machine.stopped
    netdev = machine.argv[machine.argv.index("-netdev") + 1]
    assert "guestfwd=tcp:169.254.169.254:80-cmd:" in netdev, "the machine has a metadata service"


def test_what_a_local_verification_machine_ships_lands_beside_its_console_log(
    local_build,
) -> None:
    ctx, built = local_build

    with ctx.target.machine(built, ctx.require_image(), run_id="r2", record=lambda *_: None):
        pass

    (machine,) = ctx.runner.processes
    netdev = machine.argv[machine.argv.index("-netdev") + 1]
    run_dir = ctx.state.run_dir("r2")
    assert netdev.endswith(
        f",guestfwd=tcp:169.254.169.253:514-cmd:{sys.executable} -m bake.local.logsink "
        f"{run_dir} verify-base-messages.log"
    )
    console = machine.argv[machine.argv.index("-chardev") + 1]
    assert console.endswith(f"path={run_dir / 'verify-base-console.log'}")


def test_a_local_verification_machine_is_told_it_is_an_instance_of_the_built_ami(
    local_build,
) -> None:
    from bake.local import imds

    ctx, built = local_build
    documents = []

    def keep_document(argv: list[str]) -> None:
        netdev = argv[argv.index("-netdev") + 1]
        (service,) = [part for part in netdev.split(",") if "-m bake.local.imds " in part]
        documents.append(imds.read_document(service.rsplit(" ", 1)[1]))

    ctx.runner.on("qemu-system-x86_64", effect=keep_document)
    with ctx.target.machine(built, ctx.require_image(), run_id="r7", record=lambda *_: None):
        pass

    (document,) = documents
    assert document.ami_id == ctx.target.ensure_ami(built)
    assert document.instance_id.startswith("i-") and len(document.instance_id) == 19
    assert (document.http_tokens, document.user_data) == ("required", None)


def test_a_state_directory_qemu_cannot_name_is_bad_input(tmp_path: Path, cloud) -> None:
    from bake.errors import InputError

    ctx = make_context(tmp_path / "my state")
    ctx.target._cloud = cloud
    disk = tmp_path / "built.qcow2"
    disk.write_bytes(b"a built image")
    built = Built("base", "d" * 64, "ami-0source", ctx.target.store.put(disk, "base"))

    machine = ctx.target.machine(built, ctx.require_image(), run_id="r8", record=lambda *_: None)
    with pytest.raises(InputError) as refused, machine:
        pass

    assert refused.value.exit_code == 2
    assert "no spaces, commas or quotes" in refused.value.format_message()
    assert ctx.runner.commands("qemu-system-x86_64") == [], "no machine was started"
