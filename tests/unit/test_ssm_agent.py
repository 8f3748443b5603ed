"""The `ssm-agent` step: its options checked at load, refused on the local target, rendered as a
shell provisioner, and its script (packer/scripts/ssm-agent.sh) run against stand-ins for the
commands it calls (curl, dpkg, dpkg-deb, dpkg-query, systemctl), since no EC2 instance is here."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bake.blocks import StepContext
from bake.config import ConfigError, from_dict
from bake.provisioners import PROVISIONERS, ssm_agent_user_data
from bake.runner import Runner
from bake.steps import SsmAgentStep

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "packer" / "scripts" / "ssm-agent.sh"
SHA = "a" * 64


def config(tmp_path: Path, step: Any, target: str = "aws") -> Any:
    (tmp_path / "suites").mkdir(exist_ok=True)
    base = "debian:bookworm" if target == "local" else "ami-0123456789abcdef0"
    raw = {
        "target": target,
        "images": {"base": {"base": base, "steps": ["patch", step], "verify": ["suites"]}},
    }
    return from_dict(raw, tmp_path / "bake.toml")


def test_the_local_target_refuses_the_step_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, "ssm-agent", target="local")
    assert raised.value.exit_code == 2
    assert raised.value.message == (
        f"{tmp_path / 'bake.toml'}: images.base.steps[1] (ssm-agent): the local target has no "
        'Systems Manager for the agent to register with; the step is for target = "aws"'
    )


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"ssm-agent": {"version": "newest"}}, "version 'newest' is wrong: write \"latest\" or"),
        ({"ssm-agent": {"sha256": SHA}}, "sha256 needs a pinned version (the latest package"),
        ({"ssm-agent": {"version": "3.3.1142.0", "sha256": "abc"}}, "sha256 'abc' is wrong"),
        ({"ssm-agent": {"region": "eu-west-1"}}, "unknown option region (known: version, sha256)"),
    ],
)
def test_the_steps_options_are_checked_at_load(tmp_path: Path, step: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, step)
    assert f"images.base.steps[1] (ssm-agent): {message}" in raised.value.message


def step_context(tmp_path: Path, loaded: Any) -> StepContext:
    return StepContext(
        config=loaded,
        image=loaded.images["base"],
        target="aws",
        scripts=REPO / "packer" / "scripts",
        mirror="http://deb.example/debian",
        security_mirror="http://deb.example/debian-security",
        execute_command="sudo -E sh -eu '{{ .Path }}'",
        runner=Runner(),
        render_dir=tmp_path / "render",
    )


def test_the_step_renders_the_script_with_its_pins(tmp_path: Path) -> None:
    loaded = config(tmp_path, {"ssm-agent": {"version": "3.3.1142.0", "sha256": SHA.upper()}})
    (step,) = [s for s in loaded.images["base"].steps if isinstance(s, SsmAgentStep)]

    (block,) = PROVISIONERS["ssm-agent"](step, step_context(tmp_path, loaded))

    assert (block.step, block.type) == ("ssm-agent", "shell")
    assert block.settings["script"] == str(SCRIPT) and block.files == (SCRIPT,)
    assert block.settings["environment_vars"] == [
        "BAKE_SSM_AGENT_VERSION=3.3.1142.0",
        f"BAKE_SSM_AGENT_SHA256={SHA}",
    ]
    assert block.settings["execute_command"].startswith("sudo")
    user_data = ssm_agent_user_data(REPO / "packer" / "scripts", loaded.images["base"])
    assert user_data.startswith(
        f"#!/bin/sh\nBAKE_SSM_AGENT_VERSION=3.3.1142.0\nBAKE_SSM_AGENT_SHA256={SHA}\n"
    )
    assert user_data.endswith(SCRIPT.read_text().partition("\n")[2])
    plain = config(tmp_path, "patch")
    assert ssm_agent_user_data(REPO / "packer" / "scripts", plain.images["base"]) == (
        SCRIPT.read_text()
    ), "without the step: the latest agent"


STUBS = {
    "curl": """
case "$*" in
  *api/token*) echo token-1 ;;
  *placement/region*) echo eu-central-1 ;;
  *-o*)
    while [ "$1" != -o ]; do shift; done
    echo "curl $3" >> "$LOG"
    printf 'a package' > "$2" ;;
esac
""",
    "dpkg": """
case "$1" in
  --print-architecture) echo amd64 ;;
  -i) echo "dpkg -i" >> "$LOG"; touch "$STATE/installed" ;;
esac
""",
    "dpkg-query": """
[ -e "$STATE/installed" ] || exit 1
case "$*" in
  *Status*) echo "install ok installed ${INSTALLED_VERSION}" ;;
  *) printf '%s' "$INSTALLED_VERSION" ;;
esac
""",
    "dpkg-deb": """
case "$3" in
  Package) echo "$DEB_PACKAGE" ;;
  Architecture) echo amd64 ;;
  Version) echo "$DEB_VERSION" ;;
esac
""",
    "systemctl": """
echo "systemctl $*" >> "$LOG"
case "$*" in
  *is-enabled*) [ -e "$STATE/enabled" ] ;;
  enable*) touch "$STATE/enabled" ;;
esac
""",
}


def run_script(
    tmp_path: Path, *, installed: str = "", enabled: bool = False, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The script, as root runs it on the build instance, with the commands it calls stood in
    for; what it did (the stand-ins' log)."""
    stubs, state = tmp_path / "stubs", tmp_path / "state"
    stubs.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    for name, body in STUBS.items():
        (stubs / name).write_text("#!/bin/sh\n" + body)
        (stubs / name).chmod(0o755)
    if installed:
        (state / "installed").touch()
    if enabled:
        (state / "enabled").touch()
    log = tmp_path / "log"
    log.write_text("")
    done = subprocess.run(
        ["sh", "-eu", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": f"{stubs}:/usr/bin:/bin",
            "LOG": str(log),
            "STATE": str(state),
            "INSTALLED_VERSION": installed or "3.3.1142.0-1",
            "DEB_PACKAGE": "amazon-ssm-agent",
            "DEB_VERSION": "3.3.1142.0-1",
            "HOME": str(tmp_path),
            **env,
        },
    )
    return done, log.read_text().splitlines()


BUCKET = "https://s3.eu-central-1.amazonaws.com/amazon-ssm-eu-central-1"


def test_the_agent_comes_from_the_instances_own_region_and_is_enabled(tmp_path: Path) -> None:
    done, did = run_script(tmp_path)

    assert done.returncode == 0, done.stderr
    assert did == [
        f"curl {BUCKET}/latest/debian_amd64/amazon-ssm-agent.deb",
        "dpkg -i",
        "systemctl enable amazon-ssm-agent",
        "systemctl start amazon-ssm-agent",
        "systemctl is-active --quiet amazon-ssm-agent",
    ]


def test_a_pinned_agent_is_checked_against_its_digest(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"a package").hexdigest()
    pinned = {"BAKE_SSM_AGENT_VERSION": "3.3.1142.0"}

    good, did = run_script(tmp_path / "good", **pinned, BAKE_SSM_AGENT_SHA256=digest)
    bad, bad_did = run_script(tmp_path / "bad", **pinned, BAKE_SSM_AGENT_SHA256="0" * 64)

    assert good.returncode == 0, good.stderr
    assert did[0] == f"curl {BUCKET}/3.3.1142.0/debian_amd64/amazon-ssm-agent.deb"
    assert bad.returncode == 1 and "does not have the SHA-256 " + "0" * 64 in bad.stderr
    assert "dpkg -i" not in bad_did, "nothing unchecked is installed"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"DEB_PACKAGE": "not-the-agent"}, "is not the amazon-ssm-agent package"),
        (
            {"BAKE_SSM_AGENT_VERSION": "3.3.1142.0", "DEB_VERSION": "3.2.0.0-1"},
            "is version 3.2.0.0-1, not 3.3.1142.0",
        ),
    ],
)
def test_a_package_that_is_not_the_one_asked_for_is_refused(
    tmp_path: Path, env: dict[str, str], problem: str
) -> None:
    done, did = run_script(tmp_path, **env)
    assert done.returncode == 1 and problem in done.stderr
    assert "dpkg -i" not in did


def test_an_agent_already_there_is_left_running(tmp_path: Path) -> None:
    kept, did = run_script(tmp_path / "kept", installed="3.3.1142.0-1", enabled=True)
    enabled, enabled_did = run_script(tmp_path / "off", installed="3.3.1142.0-1")
    other, _ = run_script(
        tmp_path / "other", installed="3.2.0.0-1", BAKE_SSM_AGENT_VERSION="3.3.1142.0"
    )

    assert kept.returncode == 0 and "3.3.1142.0-1 is installed and enabled" in kept.stdout
    assert not [line for line in did if line.startswith(("curl", "dpkg", "systemctl start"))]
    assert enabled.returncode == 0 and "systemctl enable amazon-ssm-agent" in enabled_did
    assert not any("start" in line or "restart" in line for line in enabled_did)
    assert other.returncode == 1 and "3.2.0.0-1 is installed already, not 3.3.1142.0" in (
        other.stderr
    )


def test_the_script_is_posix_sh() -> None:
    assert subprocess.run(["dash", "-n", str(SCRIPT)]).returncode == 0
    assert os.access(SCRIPT, os.X_OK)
