"""Reading Packer's version and its machine-readable output."""

from __future__ import annotations

import pytest

from bake.errors import BakeError
from bake.packer import MachineLine, PackerVersion, StepProgress, detect_version
from tests.unit.fakes import FakeRunner


@pytest.mark.parametrize(
    ("text", "version", "plugins"),
    [
        ("Packer v1.6.6\n", (1, 6, 6), False),
        ("Packer v1.9.4\n\nYour version of Packer is out of date!", (1, 9, 4), True),
        ("Packer v1.7.0", (1, 7, 0), True),
        ("1.11.2", None, None),
    ],
)
def test_version_parsing(text: str, version: tuple | None, plugins: bool | None) -> None:
    if version is None:
        with pytest.raises(BakeError, match="cannot read a Packer version"):
            PackerVersion.parse(text)
        return
    parsed = PackerVersion.parse(text)
    assert (parsed.major, parsed.minor, parsed.patch) == version
    assert parsed.has_required_plugins is plugins


def test_versions_order() -> None:
    assert PackerVersion(1, 6, 6) < PackerVersion(1, 7, 0) < PackerVersion(1, 10, 0)
    assert str(PackerVersion(1, 9, 4)) == "1.9.4"


def test_detect_version_runs_packer_version() -> None:
    runner = FakeRunner().on("packer", stdout="Packer v1.6.6\n")
    assert detect_version(runner) == PackerVersion(1, 6, 6)
    assert runner.calls == [["packer", "version"]]


def test_machine_readable_step_lines() -> None:
    line = MachineLine.parse(
        "1795712028,,ui,say,==> qemu.base: Starting VM%!(PACKER_COMMA) booting disk image"
    )
    assert line is not None
    assert line.kind == "ui"
    assert line.step == "Starting VM, booting disk image"
    assert line.error is None


def test_machine_readable_artifact_and_error_lines() -> None:
    artifact = MachineLine.parse("1606,amazon-ebs.base,artifact,0,id,us-east-1:ami-0abc")
    assert artifact is not None and artifact.target == "amazon-ebs.base"
    assert artifact.data == ["0", "id", "us-east-1:ami-0abc"]
    assert artifact.step is None
    error = MachineLine.parse("1606,,ui,error,Build 'qemu.base' errored: boom\\nmore")
    assert error is not None and error.error == "Build 'qemu.base' errored: boom\nmore"
    assert MachineLine.parse("not a machine line") is None
    message = MachineLine.parse("1606,,ui,message,    qemu.base: Setting up linux-image")
    assert message is not None and message.step is None
    assert "Setting up linux-image" in message.text


def test_a_provisioning_script_says_what_it_is_doing() -> None:
    line = MachineLine.parse(
        "1606,,ui,message,    qemu.base: bake-progress: unpacking perl (2 of 25)"
    )
    assert line is not None and line.progress == "unpacking perl (2 of 25)"
    assert line.step is None
    other = MachineLine.parse("1606,,ui,message,    qemu.base: Unpacking perl (5.36.0-7) ...")
    assert other is not None and other.progress is None
    said = MachineLine.parse("1606,,ui,say,==> qemu.base: bake-progress: not a message")
    assert said is not None and said.progress is None


def apt_summary(source: str, upgraded: int, installed: int) -> str:
    """apt's count of what it will do, as Packer passes it on (its commas escaped)."""
    comma = "%!(PACKER_COMMA)"
    counts = f"{upgraded} upgraded{comma} {installed} newly installed{comma} 0 to remove"
    return f"message,    qemu.{source}: {counts} and 0 not upgraded."


def shown(lines: list[str]) -> list[tuple[str | None, str | None]]:
    """What StepProgress makes of these Packer lines (the `ui` kind and data after the time)."""
    progress = StepProgress()
    read = []
    for text in lines:
        line = MachineLine.parse(f"1606,,ui,{text}")
        assert line is not None
        read.append(progress.read(line))
    return read


def test_a_script_installing_packages_shows_the_package_apt_is_at_n_of_m() -> None:
    assert shown(
        [
            "say,==> qemu.web: Provisioning with shell script: web.sh",
            "message,    qemu.web: Reading package lists...",
            apt_summary("web", 0, 3),
            "message,    qemu.web: Unpacking libpsl5:amd64 (0.21.2-1) ...",
            "message,    qemu.web: Unpacking nginx-common (1.22.1-9+deb12u12) ...",
            "message,    qemu.web: Unpacking nginx (1.22.1-9+deb12u12) ...",
            "message,    qemu.web: Setting up libpsl5:amd64 (0.21.2-1) ...",
            "message,    qemu.web: Setting up nginx-common (1.22.1-9+deb12u12) ...",
            "message,    qemu.web: Processing triggers for libc-bin (2.36-9+deb12u14) ...",
            apt_summary("web", 0, 1),
            "message,    qemu.web: Unpacking rsyslog (8.2302.0-1+deb12u2) ...",
        ]
    ) == [
        ("Provisioning with shell script: web.sh", None),
        (None, None),
        (None, None),
        (None, "unpacking libpsl5 (1 of 3)"),
        (None, "unpacking nginx-common (2 of 3)"),
        (None, "unpacking nginx (3 of 3)"),
        (None, "configuring libpsl5 (1 of 3)"),
        (None, "configuring nginx-common (2 of 3)"),
        (None, "trigger libc-bin"),
        (None, None),
        (None, "unpacking rsyslog (1 of 1)"),  # a second apt run counts its own packages
    ]


def test_apts_count_is_left_out_where_apt_did_not_say_it() -> None:
    assert shown(["message,    qemu.web: Unpacking nginx (1.22.1-9+deb12u12) ..."]) == [
        (None, "unpacking nginx")
    ]


def test_a_step_that_says_what_it_does_is_not_talked_over_by_apt_until_the_next_step() -> None:
    assert shown(
        [
            "say,==> qemu.base: Provisioning with shell script: patch.sh",
            "message,    qemu.base: bake-progress: reading the archive's indexes",
            apt_summary("base", 24, 1),
            "message,    qemu.base: Unpacking perl (5.36.0-7+deb12u4) over (5.36.0-7+deb12u3) ...",
            "message,    qemu.base: bake-progress: unpacking perl (2 of 25)",
            "say,==> qemu.base: Provisioning with shell script: ship-logs.sh",
            "message,    qemu.base: Unpacking rsyslog (8.2302.0-1+deb12u2) ...",
        ]
    ) == [
        ("Provisioning with shell script: patch.sh", None),
        (None, "reading the archive's indexes"),
        (None, None),
        (None, None),
        (None, "unpacking perl (2 of 25)"),
        ("Provisioning with shell script: ship-logs.sh", None),
        (None, "unpacking rsyslog"),
    ]
