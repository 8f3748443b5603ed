"""bake.toml is validated once, at load, and every problem is named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bake import config
from bake.errors import ConfigError
from bake.steps import PatchStep, ShellStep

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "suites").mkdir(exist_ok=True)
    path = tmp_path / "bake.toml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
[images.base]
base = "debian:bookworm"
steps = ["patch", "harden", "lineage"]
verify = ["suites"]

[services.demo]
image = "base"
capacity = 2
"""


def test_the_shipped_config_loads() -> None:
    loaded = config.load(REPO / "bake.toml")
    assert loaded.target == "local"
    assert list(loaded.images) == ["base", "web"]
    assert [step.kind for step in loaded.images["base"].steps] == ["patch", "harden", "lineage"]
    assert [step.kind for step in loaded.images["web"].steps] == [
        "shell",
        "pull-deploy",
        "ship-logs",
        "lineage",
    ]
    assert loaded.images["web"].base_for("local").describe() == "image:base"
    assert loaded.services["demo"].image == "web"
    assert loaded.local.machines and loaded.local.machine_memory == 384
    assert loaded.images["base"].base_for("local").describe() == "debian:bookworm"
    assert loaded.images["base"].base_for("aws").kind == "ssm"


def test_defaults_and_derived_names(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, MINIMAL))
    service = loaded.services["demo"]
    assert service.capacity.min == service.capacity.desired == service.capacity.max == 2
    assert service.launch_template == "demo"
    assert service.load_balancer == "demo"
    assert service.names("blue").asg == "demo-blue"
    assert service.names("green").target_group == "demo-green"
    assert service.shift_steps == [100]
    assert loaded.state_dir == Path(".bake")
    assert config.state_dir(loaded) == tmp_path / ".bake"
    assert (loaded.local.machines, loaded.local.machine_memory, loaded.local.machine_cpus) == (
        True,
        384,
        1,
    )


def test_durations_accept_units(tmp_path: Path) -> None:
    text = MINIMAL + 'health_timeout = "10m"\nshift_interval = "45s"\n'
    service = config.load(write(tmp_path, text)).services["demo"]
    assert service.health_timeout == 600
    assert service.shift_interval == 45


def test_step_tables_and_base_forms(tmp_path: Path) -> None:
    text = """
[images.base]
base = { filter = { name = "debian-12-amd64-*", owners = ["136693071363"] } }
steps = ["patch", { shell = "x.sh" }, { patch = { suite = "trixie", mirror = "https://m/debian" } }]
verify = ["suites"]

[images.web]
base = "image:base"
steps = [{ shell = { script = "y.sh", environment = { A = "1" } } }]
verify = ["suites"]
"""
    loaded = config.load(write(tmp_path, text))
    assert loaded.images["base"].steps == [
        PatchStep(),
        ShellStep(script="x.sh"),
        PatchStep(suite="trixie", mirror="https://m/debian"),
    ]
    assert loaded.images["base"].base_for("aws").filter["owners"] == ["136693071363"]
    assert loaded.images["web"].base_for("local").value == "base"
    assert loaded.images["web"].steps == [ShellStep(script="y.sh", environment={"A": "1"})]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL.replace('verify = ["suites"]', 'verify = ["nope"]'),
            "images.base.verify: 'nope' does not exist",
        ),
        (MINIMAL.replace('image = "base"', 'image = "web"'), "services.demo.image: no image 'web'"),
        (MINIMAL.replace('"lineage"', '"polish"'), "unknown step 'polish'"),
        (MINIMAL.replace("debian:bookworm", "ubuntu:noble"), "'ubuntu:noble' is not a base"),
        (MINIMAL + "colour = 1\n", "services.demo.colour: unknown key"),
        (
            MINIMAL.replace("capacity = 2", "capacity = { min = 3, desired = 2, max = 4 }"),
            "min <= desired <= max",
        ),
        (MINIMAL + "shift_steps = [50, 20]\n", "must rise and end at 100"),
        (MINIMAL + 'health_timeout = "soon"\n', "'soon' is not a duration"),
        ('target = "gcp"\n' + MINIMAL, "target: Input should be 'local' or 'aws'"),
        (
            MINIMAL.replace("[images.base]", "[images.Base]").replace('"base"', '"Base"'),
            "'Base' is not a usable image name",
        ),
        (
            MINIMAL.replace('steps = ["patch", "harden", "lineage"]\n', ""),
            "images.base.steps: required key is missing",
        ),
        ('target = "aws"\n' + MINIMAL, "debian:bookworm is built by the local target only"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config.load(write(tmp_path, text))
    message = raised.value.format_message()
    assert expected in message
    assert str(tmp_path / "bake.toml") in message
    assert "\n" not in message


def test_layers_must_not_cycle(tmp_path: Path) -> None:
    text = """
[images.a]
base = "image:b"
steps = []
verify = ["suites"]

[images.b]
base = "image:a"
steps = []
verify = ["suites"]
"""
    with pytest.raises(ConfigError, match="cycle"):
        config.load(write(tmp_path, text))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config file at"):
        config.load(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[images.base\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(broken)


def test_unknown_image_and_service_name_the_known_ones(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, MINIMAL))
    with pytest.raises(ConfigError, match="known images: base"):
        loaded.image("web")
    with pytest.raises(ConfigError, match="known services: demo"):
        loaded.service("shop")


def test_state_dir_can_be_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAKE_STATE_DIR", str(tmp_path / "elsewhere"))
    loaded = config.load(write(tmp_path, MINIMAL))
    assert config.state_dir(loaded) == tmp_path / "elsewhere"


def test_the_role_passed_to_instances_is_the_profiles_unless_named(tmp_path: Path) -> None:
    named = config.load(write(tmp_path, MINIMAL + 'instance_profile = "web"\n')).services["demo"]
    assert named.role == "web"
    text = MINIMAL + 'instance_profile = "web"\ninstance_role = "web-role"\n'
    assert config.load(write(tmp_path, text)).services["demo"].role == "web-role"
    assert config.load(write(tmp_path, MINIMAL)).services["demo"].role is None
    with pytest.raises(ConfigError, match="instance_role is the role of instance_profile"):
        config.load(write(tmp_path, MINIMAL + 'instance_role = "web-role"\n'))
