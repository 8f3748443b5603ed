"""Steps are typed when bake.toml loads: every option of every step is checked then, and each
problem is one line naming the step, the option and what would be right."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest

from bake import config
from bake.errors import ConfigError
from bake.provisioners import PROVISIONERS
from bake.steps import (
    STEPS,
    ChefStep,
    HardenStep,
    LineageStep,
    OmnitruckClient,
    PatchStep,
    PreinstalledClient,
    ShellStep,
    UrlClient,
)

OMNITRUCK = {"method": "omnitruck", "product": "chef", "version": "18.5.0"}
SHA = "0123456789abcdef" * 4
RUN_LIST = ["recipe[golden_web]"]
CHEF = r"images\.base\.steps\[0\] \(chef\): "
SHELL = r"images\.base\.steps\[0\] \(shell\): "


def image(*steps: Any, **sections: Any) -> dict[str, Any]:
    """A config whose image `base` has `steps`, with other top-level tables."""
    body = {"base": "debian:bookworm", "steps": list(steps), "verify": ["suites"]}
    return {"images": {"base": body}, **sections}


def chef(**options: Any) -> dict[str, Any]:
    """A chef step: a run list and an omnitruck client unless `options` say otherwise."""
    return {"chef": {"run_list": RUN_LIST, "client": OMNITRUCK, **options}}


def client(**keys: Any) -> dict[str, Any]:
    return chef(client=keys)


NOT_UTF8 = '[images.base]\nbase = "debian:bookworm"\nsteps = []\nverify = ["suites"]\n'
NOT_UTF8 += 'description = "café"\n'

RULES = [
    pytest.param(
        image({"chef": {"client": OMNITRUCK}}),
        CHEF + r"run_list is required \(write run_list = \[",
        id="chef-run-list-missing",
    ),
    pytest.param(
        image(chef(run_list=[])), CHEF + r"run_list is required \(write", id="chef-run-list-empty"
    ),
    pytest.param(
        image(chef(run_list=["golden_web"])),
        CHEF + r"run_list entry 'golden_web' is not a recipe",
        id="chef-run-list-not-a-recipe",
    ),
    pytest.param(
        image(chef(run_list=["role[web]"])),
        CHEF + r"run_list entry 'role\[web\]' is not a recipe",
        id="chef-run-list-role",
    ),
    pytest.param(
        image({"chef": {"run_list": RUN_LIST}}),
        CHEF + r"client is required, for example client = \{ method = ",
        id="chef-client-missing",
    ),
    pytest.param(
        image(chef(client="omnitruck")), CHEF + r"client must be a table$", id="chef-client-text"
    ),
    pytest.param(
        image(client(product="chef")),
        CHEF + r"client\.method is missing: one of omnitruck, url, preinstalled \(for example",
        id="chef-method-missing",
    ),
    pytest.param(
        image(client(method="apt")),
        CHEF + r"client\.method 'apt' is wrong: one of omnitruck, url, preinstalled \(for example",
        id="chef-method-unknown",
    ),
    pytest.param(
        image(client(method="omnitruck")),
        CHEF + r"client\.version is missing: omnitruck needs a pinned version",
        id="chef-version-missing",
    ),
    pytest.param(
        image(client(method="omnitruck", version="latest")),
        CHEF + r"client\.version 'latest' is wrong: .*such as version = \"18\.5\.0\"$",
        id="chef-version-latest",
    ),
    pytest.param(
        image(client(method="omnitruck", version="18")),
        CHEF + r"client\.version '18' is wrong: omnitruck needs a pinned version",
        id="chef-version-unpinned",
    ),
    pytest.param(
        image(client(method="omnitruck", version="18.5.0", product="chefdk")),
        CHEF + r"client\.product 'chefdk' is not one of chef, cinc",
        id="chef-product",
    ),
    pytest.param(
        image(client(method="url", sha256=SHA)),
        CHEF + r"client\.url is missing: the \.deb's address",
        id="chef-url-missing",
    ),
    pytest.param(
        image(client(method="url", url="http://pkgs.example/c.deb", sha256=SHA)),
        CHEF + r"client\.url 'http://pkgs\.example/c\.deb' is wrong: the \.deb's address",
        id="chef-url-http",
    ),
    pytest.param(
        image(client(method="url", url="s3://bucket-only", sha256=SHA)),
        CHEF + r"client\.url 's3://bucket-only' names no object",
        id="chef-url-s3-bucket-only",
    ),
    pytest.param(
        image(client(method="url", url="https://pkgs.example/chef.deb")),
        CHEF + r"client\.sha256 is missing: the 64 hex digits of the package's SHA-256",
        id="chef-sha256-missing",
    ),
    pytest.param(
        image(client(method="url", url="https://pkgs.example/c.deb", sha256="abc")),
        CHEF + r"client\.sha256 'abc' is wrong: the 64 hex digits",
        id="chef-sha256-short",
    ),
    pytest.param(
        image(client(method="preinstalled", version="18.5.0")),
        CHEF + r"client\.version is not a key of method preinstalled \(keys: method, product\)",
        id="chef-client-unknown-key",
    ),
    pytest.param(
        image(chef(attributes=["x"])),
        CHEF + r"attributes must be a table: attributes = \{ golden_web = \{\} \}",
        id="chef-attributes-not-a-table",
    ),
    pytest.param(
        image(chef(attributes={"run_list": ["recipe[x]"]})),
        CHEF + r"attributes cannot set run_list \(give recipes in run_list\)",
        id="chef-attributes-run-list",
    ),
    pytest.param(
        image(chef(attributes={"built": datetime.date(2025, 1, 1)})),
        CHEF + r"attributes may hold strings, numbers, booleans, arrays, tables",
        id="chef-attributes-not-json",
    ),
    pytest.param(
        image(chef(runlist=["recipe[x]"])),
        CHEF + r"unknown option runlist \(known: run_list, attributes, client\)",
        id="chef-unknown-option",
    ),
    pytest.param(
        image(
            chef(client={"method": "url", "url": "s3://packages/chef.deb", "sha256": SHA}),
            chef(client={"method": "url", "url": "s3://packages/cinc.deb", "sha256": SHA}),
        ),
        r"images\.base\.steps: one image can fetch one s3:// client package, not 2 "
        r"\(s3://packages/chef\.deb, s3://packages/cinc\.deb\)",
        id="chef-two-s3-packages",
    ),
    pytest.param(
        image({"shell": {"environment": {"A": "1"}}}),
        SHELL + r'script is missing: a shell step needs script = "path/to/script\.sh"',
        id="shell-script-missing",
    ),
    pytest.param(
        image({"shell": {"script": 3}}),
        SHELL + r"script must be a string, not 3",
        id="shell-script-not-a-string",
    ),
    pytest.param(
        image({"shell": {"script": "x.sh", "environment": {"MY-VAR": "1"}}}),
        SHELL + r"environment\.MY-VAR is not a shell variable name",
        id="shell-environment-name",
    ),
    pytest.param(
        image({"shell": {"script": "x.sh", "environment": {"PORT": 8080}}}),
        SHELL + r"environment\.PORT must be a string, not 8080",
        id="shell-environment-value",
    ),
    pytest.param(
        image({"shell": {"script": "x.sh", "env": {}}}),
        SHELL + r"unknown option env \(known: script, environment\)",
        id="shell-unknown-option",
    ),
    pytest.param(
        image({"patch": {"mirror": "ftp://ftp.debian.org/debian"}}),
        r"steps\[0\] \(patch\): mirror 'ftp://ftp\.debian\.org/debian' is not an http:// or "
        r"https:// address",
        id="patch-mirror",
    ),
    pytest.param(
        image({"patch": {"security_mirror": "deb.debian.org/debian-security"}}),
        r"steps\[0\] \(patch\): security_mirror 'deb\.debian\.org/debian-security' is not an",
        id="patch-security-mirror",
    ),
    pytest.param(
        image({"patch": {"suite": 12}}),
        r"steps\[0\] \(patch\): suite must be a string, not 12",
        id="patch-suite",
    ),
    pytest.param(
        image({"patch": {"suites": "bookworm"}}),
        r"steps\[0\] \(patch\): unknown option suites \(known: suite, mirror, security_mirror\)",
        id="patch-unknown-option",
    ),
    pytest.param(
        image({"harden": {"level": 2}}),
        r"steps\[0\] \(harden\): unknown option level \(known: none\)",
        id="harden-unknown-option",
    ),
    pytest.param(
        image({"lineage": {"team": "web"}}),
        r"steps\[0\] \(lineage\): unknown option team \(known: none\)",
        id="lineage-unknown-option",
    ),
    pytest.param(
        image({"pull-deploy": {"directory": "srv/app"}}),
        r"steps\[0\] \(pull-deploy\): directory 'srv/app' is wrong: an absolute folder",
        id="pull-deploy-relative-directory",
    ),
    pytest.param(
        image({"pull-deploy": {"directory": "/etc"}}),
        r"steps\[0\] \(pull-deploy\): directory '/etc' is wrong",
        id="pull-deploy-system-directory",
    ),
    pytest.param(
        image({"pull-deploy": {"user": "root"}}),
        r"steps\[0\] \(pull-deploy\): user 'root' is wrong: a system user's name, not root",
        id="pull-deploy-root",
    ),
    pytest.param(
        image({"pull-deploy": {"before": ["nginx"]}}),
        r"steps\[0\] \(pull-deploy\): before 'nginx' is not a systemd unit name",
        id="pull-deploy-unit",
    ),
    pytest.param(
        image({"pull-deploy": {"release": "1.0"}}),
        r"steps\[0\] \(pull-deploy\): unknown option release \(known: directory, user, before\)",
        id="pull-deploy-unknown-option",
    ),
    pytest.param(
        image("patch", "polish"),
        r"images\.base\.steps\[1\]: unknown step 'polish' \(known steps: patch, harden, lineage, "
        r"shell, chef, ssm-agent, ship-logs, pull-deploy\)$",
        id="unknown-step",
    ),
    pytest.param(
        image("patch", "seal"),
        r"images\.base\.steps\[1\]: seal is added last to every image; leave it out of steps",
        id="seal-given",
    ),
    pytest.param(
        image({"patch": "trixie"}),
        r"images\.base\.steps\[0\]: step 'patch' takes a table of options",
        id="options-not-a-table",
    ),
    pytest.param(
        image({"patch": {"kind": "shell", "script": "x.sh"}}),
        r"images\.base\.steps\[0\]: step 'patch' has no option 'kind'",
        id="options-name-the-kind",
    ),
    pytest.param(
        image({"patch": {}, "harden": {}}),
        r"images\.base\.steps\[0\]: a step is a name such as \"patch\" or a table",
        id="two-steps-in-one-table",
    ),
    pytest.param(
        image("patch", local={"mirror": "file:///srv/debian"}),
        r"local\.mirror: 'file:///srv/debian' is not an http:// or https:// address",
        id="local-mirror",
    ),
    pytest.param(
        image("patch", aws={"security_mirror": "s3://mirror/debian-security"}),
        r"aws\.security_mirror: 's3://mirror/debian-security' is not an http:// or https://",
        id="aws-security-mirror",
    ),
    pytest.param(
        NOT_UTF8.encode("latin-1"),
        r"not UTF-8 text \(invalid continuation byte at byte \d+\) \(save the file as UTF-8\)$",
        id="not-utf8",
    ),
]


def load(tmp_path: Path, raw: dict[str, Any] | bytes) -> config.Config:
    """Load `raw` as bake.toml in tmp_path: a table through from_dict, bytes from the file."""
    (tmp_path / "suites").mkdir(exist_ok=True)
    path = tmp_path / "bake.toml"
    if isinstance(raw, bytes):
        path.write_bytes(raw)
        return config.load(path)
    return config.from_dict(raw, path)


@pytest.mark.parametrize(("raw", "problem"), RULES)
def test_every_step_option_is_checked_at_load(
    tmp_path: Path, raw: dict[str, Any] | bytes, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, raw)
    message = raised.value.format_message()
    assert re.search(problem, message), message
    assert message.startswith(f"{tmp_path / 'bake.toml'}: ")
    assert "\n" not in message
    assert raised.value.exit_code == 2


def test_the_readmes_step_forms_load_as_typed_steps(tmp_path: Path) -> None:
    s3 = {"method": "url", "url": "s3://packages/chef.deb", "sha256": SHA.upper()}
    loaded = load(
        tmp_path,
        image(
            "patch",
            {"patch": {"suite": "trixie", "mirror": "https://m/d", "security_mirror": "http://s"}},
            "harden",
            "lineage",
            {"shell": "path/to/script.sh"},
            {"shell": {"script": "x.sh", "environment": {"K": "V", "_k2": ""}}},
            chef(attributes={"golden_web": {"port": 8080}}),
            chef(client=s3),
            chef(client={"method": "preinstalled"}),
        ),
    ).images["base"]
    assert loaded.steps[:6] == [
        PatchStep(),
        PatchStep(suite="trixie", mirror="https://m/d", security_mirror="http://s"),
        HardenStep(),
        LineageStep(),
        ShellStep(script="path/to/script.sh"),
        ShellStep(script="x.sh", environment={"K": "V", "_k2": ""}),
    ]
    web, from_s3, preinstalled = loaded.steps[6:]
    assert isinstance(web, ChefStep) and web.run_list == ("recipe[golden_web]",)
    assert web.attributes == {"golden_web": {"port": 8080}}
    assert web.client == OmnitruckClient(product="chef", version="18.5.0")
    assert isinstance(from_s3, ChefStep) and from_s3.client == UrlClient(
        url="s3://packages/chef.deb", sha256=SHA
    )
    assert isinstance(preinstalled, ChefStep)
    assert preinstalled.client == PreinstalledClient(product="chef")
    assert loaded.s3_package_url == "s3://packages/chef.deb"
    assert loaded.has_step("chef") and not loaded.has_step("seal")


def test_every_kind_of_step_has_a_provisioner_and_seal_comes_last() -> None:
    assert list(PROVISIONERS) == [*STEPS, "seal"]
