"""Every bound bake.toml puts on a service and an image, as a table of cases per rule, and the rules
about all inputs as properties: what loads is safe to run, what is refused is one line, exit 2."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bake.config import Config, from_dict
from bake.errors import ConfigError


def load(tmp_path: Path, *, service: dict[str, Any] | None = None, **images: Any) -> Config:
    """A config of image `base` (plus `images`) and service `demo` (with `service` laid over)."""
    (tmp_path / "suites").mkdir(exist_ok=True)
    raw = {
        "images": {
            "base": {"base": "debian:bookworm", "steps": [], "verify": ["suites"]},
            **images,
        },
        "services": {"demo": {"image": "base", "capacity": 2, **(service or {})}},
    }
    return from_dict(raw, tmp_path / "bake.toml")


def refused(tmp_path: Path, expected: str, **changes: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, **changes)
    assert expected in raised.value.format_message()
    assert raised.value.exit_code == 2
    assert "\n" not in raised.value.format_message()


RISE = "must rise and end at 100"


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([], RISE),
        ([10, 50], RISE),
        ([50, 50, 100], RISE),
        ([100, 100], RISE),
        ([50, 10, 100], RISE),
        ([100, 50], RISE),
        ([0, 100], "greater than 0"),
        ([-10, 100], "greater than 0"),
        ([10, 101], "less than or equal to 100"),
        ("100", "valid list"),
    ],
)
def test_shift_steps_must_rise_and_end_at_100(tmp_path: Path, steps: Any, problem: str) -> None:
    refused(tmp_path, "services.demo.shift_steps", service={"shift_steps": steps})
    refused(tmp_path, problem, service={"shift_steps": steps})


@pytest.mark.parametrize("steps", [[100], [1, 100], [10, 50, 100], [99, 100]])
def test_shift_steps_that_rise_to_100_load(tmp_path: Path, steps: list[int]) -> None:
    assert load(tmp_path, service={"shift_steps": steps}).services["demo"].shift_steps == steps


@pytest.mark.parametrize(
    ("capacity", "problem"),
    [
        ({"min": 1, "desired": 3, "max": 2}, "needs min <= desired <= max, got 1, 3, 2"),
        ({"min": 3, "desired": 2, "max": 4}, "needs min <= desired <= max, got 3, 2, 4"),
        ({"min": 0, "desired": 0, "max": 2}, "desired: Input should be greater than or equal to 1"),
        ({"min": -1, "desired": 1, "max": 1}, "min: Input should be greater than or equal to 0"),
        ({"min": 1, "desired": 1}, "max: required key is missing"),
        (0, "desired: Input should be greater than or equal to 1"),
        (True, "capacity"),
    ],
)
def test_capacity_must_be_ordered_and_positive(tmp_path: Path, capacity: Any, problem: str) -> None:
    refused(tmp_path, problem, service={"capacity": capacity})


@pytest.mark.parametrize(
    ("service", "problem"),
    [
        ({"image": "nope"}, "services.demo.image: no image 'nope' (known images: base)"),
        ({"listener_port": 0}, "listener_port: Input should be greater than 0"),
        ({"listener_port": 65536}, "listener_port: Input should be less than 65536"),
        ({"health_timeout": 0}, "health_timeout: Input should be greater than 0"),
        ({"shift_interval": "soon"}, "'soon' is not a duration"),
        ({"colour": "blue"}, "services.demo.colour: unknown key"),
    ],
)
def test_service_values_are_bounded(tmp_path: Path, service: dict[str, Any], problem: str) -> None:
    refused(tmp_path, problem, service=service)


def test_an_image_cannot_build_on_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="images.base.base: an image cannot build on itself"):
        from_dict(
            {
                "images": {"base": {"base": "image:base", "steps": [], "verify": ["suites"]}},
            },
            _suites(tmp_path) / "bake.toml",
        )


def test_layers_cannot_form_a_cycle(tmp_path: Path) -> None:
    refused(
        tmp_path,
        "layers form a cycle through",
        web={"base": "image:app", "steps": [], "verify": ["suites"]},
        app={"base": "image:web", "steps": [], "verify": ["suites"]},
    )


def test_a_layer_on_an_unknown_image_names_the_known_ones(tmp_path: Path) -> None:
    refused(
        tmp_path,
        "images.web.base: no image 'nope' (known images: base, web)",
        web={"base": "image:nope", "steps": [], "verify": ["suites"]},
    )


@pytest.mark.parametrize(
    ("name", "ok"),
    [("web", True), ("web-2", True), ("Web", False), ("2web", False), ("web_2", False)],
)
def test_image_names_are_plain(tmp_path: Path, name: str, ok: bool) -> None:
    image = {"base": "debian:bookworm", "steps": [], "verify": ["suites"]}
    if ok:
        assert name in load(tmp_path, **{name: image}).images
    else:
        refused(tmp_path, f"'{name}' is not a usable image name", **{name: image})


def _suites(tmp_path: Path) -> Path:
    (tmp_path / "suites").mkdir(exist_ok=True)
    return tmp_path


# properties over all inputs


def _rises_to_100(steps: list[int]) -> bool:
    return bool(steps) and steps[-1] == 100 and all(a < b for a, b in pairwise(steps))


@settings(max_examples=300)
@given(steps=st.lists(st.integers(min_value=1, max_value=100), max_size=6))
def test_shift_steps_load_exactly_when_they_rise_to_100(tmp_path_factory, steps: list[int]) -> None:
    tmp_path = tmp_path_factory.mktemp("steps")
    if _rises_to_100(steps):
        loaded = load(tmp_path, service={"shift_steps": steps}).services["demo"]
        weights = [(step, 100 - step) for step in loaded.shift_steps]
        assert all(new + old == 100 for new, old in weights)
        assert weights[-1] == (100, 0)
    else:
        refused(tmp_path, RISE, service={"shift_steps": steps})


@settings(max_examples=200)
@given(
    minimum=st.integers(min_value=0, max_value=5),
    desired=st.integers(min_value=1, max_value=5),
    maximum=st.integers(min_value=1, max_value=5),
)
def test_capacity_loads_exactly_when_ordered(
    tmp_path_factory, minimum: int, desired: int, maximum: int
) -> None:
    tmp_path = tmp_path_factory.mktemp("capacity")
    capacity = {"min": minimum, "desired": desired, "max": maximum}
    if minimum <= desired <= maximum:
        loaded = load(tmp_path, service={"capacity": capacity}).services["demo"].capacity
        assert (loaded.min, loaded.desired, loaded.max) == (minimum, desired, maximum)
    else:
        refused(tmp_path, "needs min <= desired <= max", service={"capacity": capacity})


# hardening: what is safe by default on AWS


def test_a_filter_base_must_name_its_owners(tmp_path: Path) -> None:
    refused(
        tmp_path,
        'a base filter needs owners = ["ACCOUNT"]',
        web={"base": {"filter": {"name": "debian-12-*"}}, "steps": [], "verify": ["suites"]},
    )
    web = {
        "base": {"filter": {"name": "debian-12-*", "owners": ["136693071363"]}},
        "steps": [],
        "verify": ["suites"],
    }
    assert load(tmp_path, web=web).images["web"].base["aws"].filter == web["base"]["filter"]


def test_the_toolkits_own_tags_cannot_be_set_in_bake_toml(tmp_path: Path) -> None:
    image = {"base": "debian:bookworm", "steps": [], "verify": ["suites"]}
    refused(
        tmp_path,
        "images.web.aws.tags: bake:verified: tags starting with bake: are the toolkit's own",
        web={**image, "aws": {"tags": {"team": "x", "bake:verified": "true"}}},
    )
    loaded = load(tmp_path, web={**image, "aws": {"tags": {"team": "x", "baker": "y"}}})
    assert loaded.images["web"].aws.tags == {"team": "x", "baker": "y"}


def test_images_are_encrypted_unless_told_otherwise(tmp_path: Path) -> None:
    image = {"base": "debian:bookworm", "steps": [], "verify": ["suites"]}
    assert load(tmp_path).images["base"].aws.encrypt_boot is True
    refused(
        tmp_path,
        "sharing an encrypted AMI needs kms_key_id",
        web={**image, "aws": {"ami_users": ["111122223333"]}},
    )
    plain = load(
        tmp_path, web={**image, "aws": {"encrypt_boot": False, "ami_users": ["111122223333"]}}
    )
    assert plain.images["web"].aws.encrypt_boot is False


@pytest.mark.parametrize(
    ("service", "problem"),
    [
        (
            {"name": "a" * 27},
            "green.target_group 'aaaaaaaaaaaaaaaaaaaaaaaaaaa-green' is longer than 32",
        ),
        ({"name": "a" * 33}, "load_balancer 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' is longer than 32"),
        (
            {"name": "demo", "green": {"asg": "g", "target_group": "t" * 33}},
            "green.target_group 'ttttttttttttttttttttttttttttttttt' is longer than 32",
        ),
    ],
)
def test_service_names_leave_room_for_aws_names(
    tmp_path: Path, service: dict[str, Any], problem: str
) -> None:
    (tmp_path / "suites").mkdir(exist_ok=True)
    name = service.pop("name")
    raw = {
        "images": {"base": {"base": "debian:bookworm", "steps": [], "verify": ["suites"]}},
        "services": {name: {"image": "base", "capacity": 1, **service}},
    }
    with pytest.raises(ConfigError, match=problem):
        from_dict(raw, tmp_path / "bake.toml")


def test_a_service_name_of_26_characters_fits(tmp_path: Path) -> None:
    (tmp_path / "suites").mkdir(exist_ok=True)
    name = "a" * 26
    raw = {
        "images": {"base": {"base": "debian:bookworm", "steps": [], "verify": ["suites"]}},
        "services": {name: {"image": "base", "capacity": 1}},
    }
    assert from_dict(raw, tmp_path / "bake.toml").services[name].names("green").target_group == (
        f"{name}-green"
    )


@pytest.mark.parametrize(
    ("rule", "ok"),
    [
        (10, True),
        (1, True),
        (50000, True),
        ("arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/x/1/2/3", True),
        (0, False),
        (50001, False),
        (True, False),
        ("10", False),
        ("arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/x/1/2", False),
    ],
)
def test_a_listener_rule_is_a_priority_or_a_rule_arn(tmp_path: Path, rule: Any, ok: bool) -> None:
    if ok:
        assert (
            load(tmp_path, service={"listener_rule": rule}).services["demo"].listener_rule == rule
        )
    else:
        refused(
            tmp_path,
            "is not a listener rule (give its priority, 1 to 50000, or its ARN",
            service={"listener_rule": rule},
        )


def test_the_region_and_folders_follow_the_target(tmp_path: Path) -> None:
    (tmp_path / "suites").mkdir(exist_ok=True)
    raw: dict[str, Any] = {
        "local": {"region": "eu-central-1"},
        "aws": {"region": "eu-west-1"},
        "packer_dir": "templates",
        "state_dir": "state",
        "images": {"base": {"base": "debian:bookworm", "steps": [], "verify": ["suites"]}},
    }
    local = from_dict(raw, tmp_path / "bake.toml")
    assert local.region == "eu-central-1"
    assert local.packer_path == (tmp_path / "templates").resolve()
    from bake.config import state_dir

    assert state_dir(local) == (tmp_path / "state").resolve()
    raw["images"]["base"]["base"] = "ami-0123456789abcdef0"
    assert from_dict({**raw, "target": "aws"}, tmp_path / "bake.toml").region == "eu-west-1"
