"""The `ship-logs` step: its options checked at load, the provisioner it renders on each target, and
its script (packer/scripts/ship-logs.sh) run against stand-ins for the commands it calls (apt-get,
systemctl, rsyslogd, curl, dpkg, dpkg-deb, dpkg-query and the CloudWatch agent's translator), with
the files it writes under a temporary root (BAKE_SHIP_LOGS_ROOT), since no build machine is here."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bake.blocks import StepContext
from bake.config import ConfigError, from_dict
from bake.provisioners import PROVISIONERS
from bake.runner import Runner
from bake.stages.render import render_image
from bake.steps import ShipLogsStep
from tests.unit.local_context import make_context
from tests.unit.test_render import parse_rendered

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "packer" / "scripts" / "ship-logs.sh"
SHA = "b" * 64
STEP = r"images\.web\.steps\[1\] \(ship-logs\): "


def config(tmp_path: Path, step: Any, target: str = "aws") -> Any:
    (tmp_path / "suites").mkdir(exist_ok=True)
    base = "debian:bookworm" if target == "local" else "ami-0123456789abcdef0"
    raw = {
        "target": target,
        "images": {"web": {"base": base, "steps": ["patch", step], "verify": ["suites"]}},
    }
    return from_dict(raw, tmp_path / "bake.toml")


def ship_logs_step(loaded: Any) -> ShipLogsStep:
    (step,) = [s for s in loaded.images["web"].steps if isinstance(s, ShipLogsStep)]
    return step


# options, at load


def test_the_step_alone_ships_the_journal_and_its_options_load_typed(tmp_path: Path) -> None:
    assert ship_logs_step(config(tmp_path, "ship-logs")) == ShipLogsStep()
    full = {
        "files": ["/var/log/nginx/*.log", "/srv/app/log/app-?.log", "/var/log/app,1/x.log"],
        "log_group": "/shop/web#1",
        "retention_days": 30,
        "agent_version": "1.300040.0b650",
        "agent_sha256": SHA.upper(),
    }
    step = ship_logs_step(config(tmp_path, {"ship-logs": full}))
    assert step.files == ("/var/log/nginx/*.log", "/srv/app/log/app-?.log", "/var/log/app,1/x.log")
    assert (step.log_group, step.retention_days) == ("/shop/web#1", 30)
    assert (step.agent_version, step.agent_sha256) == ("1.300040.0b650", SHA)
    assert step.group_for("web") == "/shop/web#1"
    assert ShipLogsStep().group_for("web") == "/goldenbake/web"


def test_the_aws_options_load_on_the_local_target_too(tmp_path: Path) -> None:
    """One bake.toml serves both targets (bases per target): the aws options do nothing locally."""
    step = ship_logs_step(
        config(tmp_path, {"ship-logs": {"log_group": "/shop", "retention_days": 7}}, "local")
    )
    assert (step.log_group, step.retention_days) == ("/shop", 7)


BAD_OPTIONS = [
    ({"files": "/var/log/nginx/*.log"}, r'files must be a list, such as files = \["/var/log/'),
    ({"files": ["var/log/app.log"]}, r"files entry 'var/log/app\.log' is wrong: write an absol"),
    ({"files": ["/var/log/app log.log"]}, r"files entry '/var/log/app log\.log' is wrong"),
    ({"files": ['/var/log/"x".log']}, r"files entry '/var/log/\"x\"\.log' is wrong"),
    ({"files": ["/var/log/../etc/shadow"]}, r"files entry '/var/log/\.\./etc/shadow' is wrong"),
    ({"files": ["/var/log//app.log"]}, r"files entry '/var/log//app\.log' is wrong"),
    ({"files": ["/var/log/app/"]}, r"files entry '/var/log/app/' is wrong"),
    ({"files": ["/var/log/**/*.log"]}, r"files entry '/var/log/\*\*/\*\.log' is wrong"),
    ({"files": ["/var/log/$HOME.log"]}, r"files entry '/var/log/\$HOME\.log' is wrong"),
    ({"files": [7]}, r"files entry 7 is wrong"),
    ({"files": ["/a.log", "/b.log", "/a.log"]}, r"files lists '/a\.log' more than once$"),
    ({"log_group": "shop web"}, r"log_group 'shop web' is not a CloudWatch Logs group name"),
    ({"log_group": ""}, r"log_group '' is not a CloudWatch Logs group name"),
    ({"log_group": "/g" * 300}, r"log_group '/g/g.*' is not a CloudWatch Logs group name"),
    ({"retention_days": 10}, r"retention_days 10 is not a retention CloudWatch Logs offers \(1, 3"),
    ({"retention_days": "30"}, r"retention_days '30' is not a retention"),
    ({"retention_days": True}, r"retention_days True is not a retention"),
    ({"agent_version": "newest"}, r"agent_version 'newest' is wrong: write \"latest\" or a relea"),
    ({"agent_sha256": SHA}, r"agent_sha256 needs a pinned agent_version \(the latest package"),
    ({"agent_version": "1.300040.0b650", "agent_sha256": "abc"}, r"agent_sha256 'abc' is wrong"),
    (
        {"group": "/shop"},
        r"unknown option group \(known: files, log_group, retention_days, agent_version, "
        r"agent_sha256\)$",
    ),
]


@pytest.mark.parametrize("target", ["aws", "local"])
@pytest.mark.parametrize(("options", "problem"), BAD_OPTIONS)
def test_every_option_is_checked_at_load_in_one_line(
    tmp_path: Path, target: str, options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, {"ship-logs": options}, target)
    message = raised.value.format_message()
    assert re.search(rf"^{re.escape(str(tmp_path / 'bake.toml'))}: {STEP}{problem}", message), (
        message
    )
    assert "\n" not in message and raised.value.exit_code == 2


# the provisioner


def step_context(tmp_path: Path, loaded: Any, target: str) -> StepContext:
    return StepContext(
        config=loaded,
        image=loaded.images["web"],
        target=target,
        scripts=REPO / "packer" / "scripts",
        mirror="http://deb.example/debian",
        security_mirror="http://deb.example/debian-security",
        execute_command="sudo -E sh -eu '{{ .Path }}'" if target == "aws" else None,
        runner=Runner(),
        render_dir=tmp_path / "render",
    )


def test_on_aws_the_step_renders_the_agents_group_and_pins(tmp_path: Path) -> None:
    options = {
        "files": ["/var/log/nginx/*.log", "/srv/app/*.log"],
        "retention_days": 14,
        "agent_version": "1.300040.0b650",
        "agent_sha256": SHA,
    }
    loaded = config(tmp_path, {"ship-logs": options})

    (block,) = PROVISIONERS["ship-logs"](
        ship_logs_step(loaded), step_context(tmp_path, loaded, "aws")
    )

    assert (block.step, block.type) == ("ship-logs", "shell")
    assert block.settings["script"] == str(SCRIPT) and block.files == (SCRIPT,)
    assert block.settings["environment_vars"] == [
        "BAKE_SHIP_LOGS_TO=cloudwatch",
        "BAKE_SHIP_LOGS_GROUP=/goldenbake/web",
        "BAKE_SHIP_LOGS_RETENTION=14",
        "BAKE_CLOUDWATCH_AGENT_VERSION=1.300040.0b650",
        f"BAKE_CLOUDWATCH_AGENT_SHA256={SHA}",
        "BAKE_SHIP_LOGS_FILES=/var/log/nginx/*.log /srv/app/*.log",
        '"BAKE_APT_PROXY=${var.apt_proxy}"',
    ]
    assert block.settings["execute_command"].startswith("sudo")


def test_on_the_local_target_the_step_renders_rsyslog_to_the_hosts_collector(
    tmp_path: Path,
) -> None:
    ctx = make_context(tmp_path, steps=["patch", {"ship-logs": {"files": ["/var/log/x/*.log"]}}])

    render_image(ctx, ctx.require_image())

    provisioners = parse_rendered(ctx)["build"][0]["provisioner"]
    (shipping,) = [p["shell"] for p in provisioners if p.get("shell", {}).get("script", "")
                   .endswith("/ship-logs.sh")]  # fmt: skip
    assert shipping["environment_vars"] == [
        "BAKE_SHIP_LOGS_TO=collector",
        "BAKE_SHIP_LOGS_COLLECTOR=169.254.169.253:514",
        "BAKE_SHIP_LOGS_FILES=/var/log/x/*.log",
        "BAKE_APT_PROXY=${var.apt_proxy}",
    ]
    patch = next(
        p["shell"] for p in provisioners if "patch.sh" in p.get("shell", {}).get("script", "")
    )
    assert "BAKE_APT_PROXY=${var.apt_proxy}" in patch["environment_vars"], "as the patch step"
    scripts = [Path(p["shell"]["script"]).name for p in provisioners if "shell" in p]
    assert scripts.index("ship-logs.sh") < scripts.index("seal.sh")


# the script, with the commands it calls stood in for

STUBS = {
    "apt-get": 'echo "apt-get $*" >> "$LOG"\n',
    "rsyslogd": 'echo "rsyslogd $*" >> "$LOG"\nexit "${RSYSLOGD_EXIT:-0}"\n',
    "systemctl": """
echo "systemctl $*" >> "$LOG"
case "$*" in
  "is-active --quiet "*) [ -e "$STATE/active-${3}" ] ;;
esac
""",
    "curl": """
case "$*" in
  *api/token*) echo token-1 ;;
  *placement/region*) echo eu-west-1 ;;
  *-o*)
    while [ "$1" != -o ]; do shift; done
    echo "curl $3" >> "$LOG"
    printf 'an agent package' > "$2" ;;
esac
""",
    "dpkg": """
case "$1" in
  --print-architecture) echo amd64 ;;
  -i)
    echo "dpkg -i" >> "$LOG"
    touch "$STATE/installed"
    bin="$BAKE_SHIP_LOGS_ROOT/opt/aws/amazon-cloudwatch-agent/bin"
    mkdir -p "$bin"
    printf '#!/bin/sh\\necho "config-translator $*" >> "$LOG"\\nexit "${TRANSLATOR_EXIT:-0}"\\n' \\
      > "$bin/config-translator"
    chmod +x "$bin/config-translator" ;;
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
}


class Machine:
    """A build machine as far as the script sees it: a root for its files, commands that log."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "root"
        self.stubs = tmp_path / "stubs"
        self.state = tmp_path / "state"
        self.tmp = tmp_path / "tmp"
        self.log = tmp_path / "log"
        for folder in (self.stubs, self.state, self.tmp, self.root / "etc" / "rsyslog.d",
                       self.root / "etc" / "logrotate.d"):  # fmt: skip
            folder.mkdir(parents=True, exist_ok=True)
        for name, body in STUBS.items():
            (self.stubs / name).write_text("#!/bin/sh\n" + body)
            (self.stubs / name).chmod(0o755)
        self.log.write_text("")

    def running(self, *units: str) -> None:
        for unit in units:
            (self.state / f"active-{unit}").touch()

    def installed(self, version: str) -> None:
        """The agent is there already, as `dpkg -i` would have left it."""
        (self.state / "installed").touch()
        self.installed_version = version
        bin_dir = self.root / "opt/aws/amazon-cloudwatch-agent/bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        translator = bin_dir / "config-translator"
        translator.write_text('#!/bin/sh\necho "config-translator $*" >> "$LOG"\n')
        translator.chmod(0o755)

    def run(self, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        done = subprocess.run(
            ["sh", "-eu", str(SCRIPT)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.tmp,
            env={
                "PATH": f"{self.stubs}:/usr/bin:/bin",
                "LOG": str(self.log),
                "STATE": str(self.state),
                "TMPDIR": str(self.tmp),
                "HOME": str(self.tmp),
                "BAKE_SHIP_LOGS_ROOT": str(self.root),
                "INSTALLED_VERSION": getattr(self, "installed_version", "1.300040.0b650-1"),
                "DEB_PACKAGE": "amazon-cloudwatch-agent",
                "DEB_VERSION": "1.300040.0b650-1",
                **env,
            },
        )
        return done, self.log.read_text().splitlines()

    def file(self, path: str) -> str:
        return (self.root / path.lstrip("/")).read_text()

    def files(self) -> set[str]:
        return {
            "/" + str(path.relative_to(self.root))
            for path in self.root.rglob("*")
            if path.is_file()
        }


LOCAL = {
    "BAKE_SHIP_LOGS_TO": "collector",
    "BAKE_SHIP_LOGS_COLLECTOR": "169.254.169.253:514",
    "BAKE_APT_PROXY": "http://10.0.2.2:3142/",
}
AWS = {"BAKE_SHIP_LOGS_TO": "cloudwatch", "BAKE_SHIP_LOGS_GROUP": "/goldenbake/web"}
RSYSLOG_CONF = "/etc/rsyslog.d/99-bake-ship-logs.conf"
AGENT_CONF = "/opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.json"
HELD = "/run/systemd/system/{}.d/50-bake-build.conf"


def test_on_the_local_target_rsyslog_forwards_the_journal_and_the_files_to_the_collector(
    tmp_path: Path,
) -> None:
    machine = Machine(tmp_path)
    app_logs = tmp_path / "app"
    app_logs.mkdir()
    (app_logs / "a.log").touch()  # a glob the shell could expand here, and must not

    done, did = machine.run(**LOCAL, BAKE_SHIP_LOGS_FILES=f"/var/log/nginx/*.log {app_logs}/*.log")

    assert done.returncode == 0, done.stderr
    apt = [line for line in did if line.startswith("apt-get")]
    assert apt[0].endswith(" -o Acquire::http::Proxy=http://10.0.2.2:3142/ update")
    assert apt[1].endswith(" -o Acquire::http::Proxy=http://10.0.2.2:3142/ install rsyslog")
    assert apt[2] == "apt-get clean"
    assert did.index("systemctl daemon-reload") < did.index(apt[0]), "held before installing"
    assert did[-2:] == ["rsyslogd -N1", "systemctl enable rsyslog.service"]
    assert not any(line.startswith(("systemctl start", "systemctl restart")) for line in did)
    assert machine.files() == {
        RSYSLOG_CONF,
        "/etc/systemd/journald.conf.d/50-bake-ship-logs.conf",
        "/etc/systemd/system/rsyslog.service.d/50-bake-ship-logs.conf",
        HELD.format("rsyslog.service"),
        HELD.format("amazon-cloudwatch-agent.service"),
    }
    assert not any("proxy" in machine.file(path).lower() for path in machine.files())
    assert "ConditionPathExists=/nonexistent/" in machine.file(HELD.format("rsyslog.service"))
    assert "ForwardToSyslog=no" in machine.file(
        "/etc/systemd/journald.conf.d/50-bake-ship-logs.conf"
    )
    assert "After=network.target" in machine.file(
        "/etc/systemd/system/rsyslog.service.d/50-bake-ship-logs.conf"
    )
    conf = machine.file(RSYSLOG_CONF)
    assert (
        'module(load="imjournal" StateFile="bake-imjournal.state" Ratelimit.Interval="0")' in conf
    )
    assert (
        'input(type="imfile" File="/var/log/nginx/*.log" Tag="bake-file" addMetadata="on")' in conf
    )
    assert f'input(type="imfile" File="{app_logs}/*.log" ' in conf, "the glob, not a.log"
    action = conf[conf.index('action(type="omfwd"') : conf.index(")\n", conf.index("action("))]
    for setting in ('target="169.254.169.253"', 'port="514"', 'protocol="tcp"',
                    'TCP_Framing="traditional"', 'template="bake-line"',
                    'queue.type="LinkedList"', 'queue.filename="bake-ship-logs"',
                    'queue.saveOnShutdown="on"', 'queue.timeoutShutdown="10000"',
                    'action.resumeRetryCount="-1"'):  # fmt: skip
        assert setting in action, setting
    assert conf.rstrip().endswith("\nstop"), "nothing goes on to Debian's own rules"
    assert os.listdir(machine.tmp) == [], "no scratch space stays"
    assert "ships the journal and /var/log/nginx/*.log" in done.stdout


def test_without_files_only_the_journal_is_read(tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    done, _ = machine.run(**{**LOCAL, "BAKE_APT_PROXY": ""})
    assert done.returncode == 0, done.stderr
    conf = machine.file(RSYSLOG_CONF)
    assert 'load="imjournal"' in conf and 'load="imfile"' not in conf
    assert "Proxy" not in done.stdout


def test_a_shipper_already_running_stops_until_the_image_boots(tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    machine.running("rsyslog.service", "syslog.socket")

    done, did = machine.run(**LOCAL)

    assert done.returncode == 0, done.stderr
    assert "systemctl stop rsyslog.service" in did and "systemctl stop syslog.socket" in did
    assert "systemctl stop amazon-cloudwatch-agent.service" not in did


def test_a_configuration_rsyslog_refuses_fails_the_build(tmp_path: Path) -> None:
    done, did = Machine(tmp_path).run(**LOCAL, RSYSLOGD_EXIT="1")
    assert done.returncode == 1
    assert "rsyslog refuses its configuration (rsyslogd -N1)" in done.stderr
    assert "systemctl enable rsyslog.service" not in did


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {**LOCAL, "BAKE_SHIP_LOGS_FILES": "var/log/app.log"},
            "var/log/app.log is not an absolute",
        ),
        ({"BAKE_SHIP_LOGS_TO": "syslog"}, "BAKE_SHIP_LOGS_TO is syslog, not collector or cloud"),
    ],
)
def test_wrong_input_stops_the_script_before_it_changes_anything(
    tmp_path: Path, env: dict[str, str], problem: str
) -> None:
    machine = Machine(tmp_path)
    done, did = machine.run(**env)
    assert done.returncode == 1 and problem in done.stderr
    assert did == [] and machine.files() == set()


AGENT_URL = (
    "https://amazoncloudwatch-agent-eu-west-1.s3.eu-west-1.amazonaws.com/debian/amd64/{}/"
    "amazon-cloudwatch-agent.deb"
)


def test_on_aws_the_agent_ships_rsyslogs_journal_file_and_the_listed_files(tmp_path: Path) -> None:
    machine = Machine(tmp_path)

    done, did = machine.run(
        **AWS, BAKE_SHIP_LOGS_FILES="/var/log/nginx/*.log", BAKE_SHIP_LOGS_RETENTION="30"
    )

    assert done.returncode == 0, done.stderr
    assert [line for line in did if line.startswith("apt-get")][1].endswith(
        " install rsyslog logrotate"
    )
    assert f"curl {AGENT_URL.format('latest')}" in did
    assert did.index("dpkg -i") > did.index(f"curl {AGENT_URL.format('latest')}")
    conf = machine.file(RSYSLOG_CONF)
    assert 'action(type="omfile" name="bake-ship-logs" file="/var/log/bake/journal.log"' in conf
    assert 'type="omfwd"' not in conf, "nothing is forwarded"
    assert 'load="imfile"' not in conf, "the agent reads the files itself"
    agent = json.loads(machine.file(AGENT_CONF))
    assert agent["agent"] == {"run_as_user": "root"}
    entries = agent["logs"]["logs_collected"]["files"]["collect_list"]
    assert entries == [
        {"file_path": path, "log_group_name": "/goldenbake/web",
         "log_stream_name": "{instance_id}", "publish_multi_logs": True, "retention_in_days": 30}
        for path in ("/var/log/bake/journal.log", "/var/log/nginx/*.log")
    ]  # fmt: skip
    (translated,) = [line for line in did if line.startswith("config-translator")]
    assert f"--input {machine.root}{AGENT_CONF} " in translated and "--mode ec2" in translated
    assert did[-1] == "systemctl enable amazon-cloudwatch-agent.service"
    assert not any(line.startswith(("systemctl start", "systemctl restart")) for line in did)
    rotation = machine.file("/etc/logrotate.d/bake-ship-logs")
    assert rotation.startswith("# goldenbake") and "/var/log/bake/journal.log {" in rotation
    assert "/usr/lib/rsyslog/rsyslog-rotate" in rotation
    assert os.listdir(machine.tmp) == [], "the package and the translation are gone"


def test_without_retention_or_files_the_agent_ships_the_journal_and_keeps_the_groups_own(
    tmp_path: Path,
) -> None:
    machine = Machine(tmp_path)
    done, _ = machine.run(**AWS)
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(machine.file(AGENT_CONF))["logs"]["logs_collected"]["files"][
        "collect_list"
    ]
    assert entry["file_path"] == "/var/log/bake/journal.log"
    assert "retention_in_days" not in entry


def test_a_pinned_agent_is_checked_against_its_digest_before_it_is_installed(
    tmp_path: Path,
) -> None:
    digest = hashlib.sha256(b"an agent package").hexdigest()
    pinned = {**AWS, "BAKE_CLOUDWATCH_AGENT_VERSION": "1.300040.0b650"}

    good, did = Machine(tmp_path / "good").run(**pinned, BAKE_CLOUDWATCH_AGENT_SHA256=digest)
    bad, bad_did = Machine(tmp_path / "bad").run(**pinned, BAKE_CLOUDWATCH_AGENT_SHA256="0" * 64)

    assert good.returncode == 0, good.stderr
    assert f"curl {AGENT_URL.format('1.300040.0b650')}" in did
    assert bad.returncode == 1 and "does not have the SHA-256 " + "0" * 64 in bad.stderr
    assert "dpkg -i" not in bad_did, "nothing unchecked is installed"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"DEB_PACKAGE": "amazon-ssm-agent"}, "is not the amazon-cloudwatch-agent package"),
        (
            {"BAKE_CLOUDWATCH_AGENT_VERSION": "1.300040.0b650", "DEB_VERSION": "1.247350.0-1"},
            "is version 1.247350.0-1, not 1.300040.0b650",
        ),
    ],
)
def test_a_package_that_is_not_the_agent_asked_for_is_refused(
    tmp_path: Path, env: dict[str, str], problem: str
) -> None:
    done, did = Machine(tmp_path).run(**AWS, **env)
    assert done.returncode == 1 and problem in done.stderr
    assert "dpkg -i" not in did


def test_an_agent_already_installed_is_configured_not_downloaded(tmp_path: Path) -> None:
    kept = Machine(tmp_path / "kept")
    kept.installed("1.300040.0b650-1")
    other = Machine(tmp_path / "other")
    other.installed("1.247350.0b251780-1")

    done, did = kept.run(**AWS)
    refused, _ = other.run(**AWS, BAKE_CLOUDWATCH_AGENT_VERSION="1.300040.0b650")

    assert done.returncode == 0, done.stderr
    assert not [line for line in did if line.startswith(("curl", "dpkg -i"))]
    assert "amazon-cloudwatch-agent 1.300040.0b650-1 is installed" in done.stdout
    assert AGENT_CONF in kept.files()
    assert refused.returncode == 1
    assert "1.247350.0b251780-1 is installed already, not 1.300040.0b650" in refused.stderr


def test_a_configuration_the_agent_refuses_fails_the_build(tmp_path: Path) -> None:
    done, did = Machine(tmp_path).run(**AWS, TRANSLATOR_EXIT="1")
    assert done.returncode == 1
    assert "the CloudWatch agent refuses its configuration (config-translator)" in done.stderr
    assert "systemctl enable amazon-cloudwatch-agent.service" not in did


def test_the_script_is_posix_sh() -> None:
    assert subprocess.run(["dash", "-n", str(SCRIPT)]).returncode == 0
    assert os.access(SCRIPT, os.X_OK)
