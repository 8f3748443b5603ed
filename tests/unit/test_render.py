"""render: templates become HCL2 that python-hcl2 reads back and `packer validate` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bake import templates
from bake.blocks import Expr
from bake.context import RunContext
from bake.errors import InputError
from bake.packer import PackerVersion
from bake.stages.render import Render, render_image
from tests.unit.local_context import make_context


def parse_rendered(ctx: RunContext) -> dict:
    path = ctx.state.rendered("base", "local")
    return templates.parse(path.read_text(), path)


def test_renders_the_local_template_for_packer_1_6(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    outcome = Render(ctx).run()
    assert outcome.outputs()["packer_version"] == "1.6.6"
    parsed = parse_rendered(ctx)
    assert "required_plugins" not in parsed["packer"][0]
    source = parsed["source"][0]["qemu"]["base"]
    assert source["accelerator"] == "tcg"
    assert source["disk_image"] is True
    assert source["ssh_private_key_file"] == "/keys/id_ed25519"
    provisioners = parsed["build"][0]["provisioner"]
    steps = [Path(p["shell"]["script"]).name if "shell" in p else p["file"] for p in provisioners]
    download = {
        "__is_block__": True,
        "direction": "download",
        "source": "/run/bake-source-packages.tsv",
        "destination": "${var.inventory_directory}/source-packages.tsv",
    }
    assert steps == [
        "emulated.sh", "inventory.sh", download, "patch.sh", "harden.sh", "lineage.sh", "seal.sh",
        "inventory.sh", {**download, "source": "/run/bake-packages.tsv",
                         "destination": "${var.inventory_directory}/packages.tsv"},
    ]  # fmt: skip
    assert "environment_vars" not in provisioners[0]["shell"]
    assert provisioners[1]["shell"]["environment_vars"] == [
        "BAKE_INVENTORY_FILE=/run/bake-source-packages.tsv"
    ]
    lineage_env = provisioners[5]["shell"]["environment_vars"]
    assert "BAKE_DIGEST=${var.build_digest}" in lineage_env
    assert "manifest" in parsed["build"][0]["post-processor"][0]


def test_only_an_emulated_build_machine_turns_address_randomisation_off(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    render_image(ctx, ctx.require_image())
    first = parse_rendered(ctx)["build"][0]["provisioner"][0]["shell"]
    script = Path(first["script"])
    assert script.name == "emulated.sh"
    assert "kernel.randomize_va_space=0" in script.read_text()

    ctx.target.accelerator = "kvm"  # type: ignore[misc]
    render_image(ctx, ctx.require_image())
    scripts = [
        Path(p["shell"]["script"]).name
        for p in parse_rendered(ctx)["build"][0]["provisioner"]
        if "shell" in p
    ]
    assert "emulated.sh" not in scripts
    assert scripts[0] == "inventory.sh"
    assert parse_rendered(ctx)["source"][0]["qemu"]["base"]["accelerator"] == "kvm"


def test_packer_1_7_and_newer_get_required_plugins_and_init(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, packer_version="1.9.4")
    Render(ctx).run()
    plugins = parse_rendered(ctx)["packer"][0]["required_plugins"][0]["qemu"]
    assert plugins["source"] == "github.com/hashicorp/qemu"
    assert [argv[1] for argv in ctx.runner.commands("packer")] == ["version", "init", "validate"]


def test_validate_gets_every_variable_and_the_rendered_file(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    Render(ctx).run()
    (validate,) = [argv for argv in ctx.runner.commands("packer") if argv[1] == "validate"]
    given = {validate[i + 1].split("=", 1)[0] for i, arg in enumerate(validate) if arg == "-var"}
    declared = {name: block[name] for block in parse_rendered(ctx)["variable"] for name in block}
    assert given == {name for name, body in declared.items() if "default" not in body}
    assert set(declared) - given == {"chef_package_url", "apt_proxy"}
    assert validate[-1] == str(ctx.state.rendered("base", "local"))


def test_patch_mirrors_come_from_the_step_or_the_target(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, steps=[{"patch": {"mirror": "http://mirror.example/debian"}}])
    render_image(ctx, ctx.require_image())
    env = parse_rendered(ctx)["build"][0]["provisioner"][3]["shell"]["environment_vars"]
    assert "BAKE_MIRROR=http://mirror.example/debian" in env
    assert "BAKE_SECURITY_MIRROR=http://deb.debian.org/debian-security" in env


def test_a_shell_step_runs_its_script_with_its_environment(tmp_path: Path) -> None:
    (tmp_path / "site.sh").write_text("#!/bin/sh\n")
    step = {"shell": {"script": "site.sh", "environment": {"ROLE": "web", "PORT": "8080"}}}
    ctx = make_context(tmp_path, steps=[step])
    render_image(ctx, ctx.require_image())
    shell = parse_rendered(ctx)["build"][0]["provisioner"][3]["shell"]
    assert shell["script"] == str(tmp_path / "site.sh")
    assert shell["environment_vars"] == ["ROLE=web", "PORT=8080", "BAKE_APT_PROXY=${var.apt_proxy}"]


def test_pull_deploy_uploads_its_agent_and_installs_it_with_its_units(tmp_path: Path) -> None:
    step = {"pull-deploy": {"directory": "/opt/shop", "user": "shop", "before": ["nginx.service"]}}
    ctx = make_context(tmp_path, steps=[step])
    rendered = render_image(ctx, ctx.require_image())
    upload, install = parse_rendered(ctx)["build"][0]["provisioner"][3:5]

    agent = ctx.config.packer_path / "scripts" / "pull-release.py"
    assert upload["file"]["source"] == str(agent)
    assert upload["file"]["destination"] == "/tmp/bake-pull-release"
    assert install["shell"]["script"].endswith("pull-deploy.sh")
    assert install["shell"]["environment_vars"] == [
        "BAKE_APP_DIR=/opt/shop",
        "BAKE_APP_USER=shop",
        "BAKE_RELEASE_BEFORE=nginx.service",
    ]
    assert agent in rendered.files, "the agent is part of the build's inputs"


def test_a_template_that_does_not_render_is_bad_input(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    (tmp_path / "packer" / "local.pkr.hcl.j2").write_text("source {{ image.name \n")
    with pytest.raises(InputError, match=r"local.pkr.hcl.j2:1: template does not render") as raised:
        Render(ctx).run()
    assert raised.value.exit_code == 2
    assert ctx.runner.commands("packer") == [["packer", "version"]]


def test_an_undefined_value_is_bad_input(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    template = tmp_path / "packer" / "local.pkr.hcl.j2"
    template.write_text(template.read_text().replace("local.memory", "local.memroy"))
    with pytest.raises(InputError, match="template does not render: .*memroy"):
        Render(ctx).run()


def test_a_rendering_without_a_manifest_is_caught_before_packer(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    template = tmp_path / "packer" / "local.pkr.hcl.j2"
    template.write_text(template.read_text().replace("{{ m.manifest() }}", ""))
    with pytest.raises(InputError, match="no manifest post-processor"):
        Render(ctx).run()
    assert not [argv for argv in ctx.runner.calls if argv[1:2] == ["validate"]]


def test_packer_validate_failure_is_bad_input_with_packers_words(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    ctx.runner.on(
        lambda argv: argv[:2] == ["packer", "validate"],
        returncode=1,
        stderr='Error: 1 error(s) occurred:\n\n* unknown configuration key: "bogus"',
    )
    with pytest.raises(InputError, match="packer validate failed: .*unknown configuration key"):
        Render(ctx).run()


def test_a_missing_shell_script_is_bad_input(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, steps=[{"shell": "scripts/missing.sh"}])
    with pytest.raises(InputError, match="missing.sh does not exist"):
        Render(ctx).run()


def test_rendering_twice_leaves_the_file_untouched(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    Render(ctx).run()
    path = ctx.state.rendered("base", "local")
    first = path.stat().st_mtime_ns
    Render(ctx).run()
    assert path.stat().st_mtime_ns == first


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", '"plain"'),
        ('say "hi" ${HOME} %{x}', '"say \\"hi\\" $${HOME} %%{x}"'),
        (Expr("var.run_id"), "var.run_id"),
        (True, "true"),
        (3, "3"),
        (["a", 1], '["a", 1]'),
        ({"k": "v"}, '{ "k" = "v" }'),
    ],
)
def test_hcl_literals(value: object, literal: str) -> None:
    assert templates.hcl(value) == literal


def test_hcl_literals_parse_back_with_python_hcl2() -> None:
    literal = templates.hcl('echo "${HOME}"')
    parsed = templates.parse(f"x = {literal}\n", Path("t.hcl"))
    assert parsed["x"] == 'echo "$${HOME}"'


def test_rendered_for_both_packer_generations() -> None:
    assert PackerVersion(1, 6, 6).has_required_plugins is False
    assert PackerVersion(1, 9, 0).has_required_plugins is True
