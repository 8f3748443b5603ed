"""chef steps: options validated, cookbooks checked with real Ruby at render, and the provisioning
commands rendered in order with the environment each client method needs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bake import chef, cookbooks, templates
from bake.blocks import StepContext
from bake.context import RunContext
from bake.errors import ConfigError, InputError
from bake.runner import Completed, Runner
from bake.stages.render import Rendered, render_image
from bake.steps import ChefStep
from tests.unit.fakes import FakeRunner
from tests.unit.local_context import REPO, make_context

OMNITRUCK = {"method": "omnitruck", "product": "chef", "version": "18.5.0"}
SHA = "0123456789abcdef" * 4
WEB = {"run_list": ["recipe[golden_web]"], "client": OMNITRUCK}


def chef_context(tmp_path: Path, **options: Any) -> RunContext:
    """A local run context whose image has one chef step; `ruby` really runs, packer is faked."""
    if not (tmp_path / "cookbooks").exists():
        shutil.copytree(REPO / "cookbooks", tmp_path / "cookbooks")
    ctx = make_context(tmp_path, steps=[{"chef": {**WEB, **options}}])
    ctx.runner.real = frozenset({"ruby"})
    return ctx


def render(ctx: RunContext) -> tuple[Rendered, list[dict[str, Any]]]:
    """Render the image; give the result and its steps' provisioner blocks as python-hcl2 reads
    them (without the emulated build machine's first block, and the package lists taken before
    the first step and after the seal)."""
    rendered = render_image(ctx, ctx.require_image())
    parsed = templates.parse(rendered.text, rendered.path)
    emulated, *blocks = parsed["build"][0]["provisioner"]
    assert Path(emulated["shell"]["script"]).name == "emulated.sh"
    inventory = [blocks[0], blocks[1], blocks[-2], blocks[-1]]
    assert [Path(b["shell"]["script"]).name for b in inventory[::2]] == ["inventory.sh"] * 2
    return rendered, blocks[2:-2]


def chef_dir(ctx: RunContext) -> Path:
    return ctx.state.rendered("base", "local").parent / "chef"


def packer_validated(ctx: RunContext) -> bool:
    return any(argv[:2] == ["packer", "validate"] for argv in ctx.runner.calls)


def test_blocks_install_then_upload_cookbooks_then_node_then_converge(tmp_path: Path) -> None:
    ctx = chef_context(tmp_path)
    _, blocks = render(ctx)
    assert [next(iter(block)) for block in blocks] == ["shell", "file", "file", "shell", "shell"]
    install, cookbooks, node, converge, seal = (next(iter(b.values())) for b in blocks)
    assert Path(install["script"]).name == "chef-install.sh"
    assert cookbooks["source"] == f"{chef_dir(ctx)}/cookbooks/"
    assert cookbooks["destination"] == "/tmp/bake-chef/cookbooks"
    assert node["sources"] == [str(chef_dir(ctx) / "node.json"), str(chef_dir(ctx) / "client.rb")]
    assert node["destination"] == "/tmp/bake-chef/"
    assert Path(converge["script"]).name == "chef-converge.sh"
    assert Path(seal["script"]).name == "seal.sh"


@pytest.mark.parametrize(
    ("client", "environment"),
    [
        (
            OMNITRUCK,
            [
                "BAKE_CHEF_METHOD=omnitruck",
                "BAKE_CHEF_PRODUCT=chef",
                "BAKE_CHEF_VERSION=18.5.0",
                "BAKE_CHEF_URL=",
                "BAKE_CHEF_SHA256=",
            ],
        ),
        (
            {"method": "omnitruck", "product": "cinc", "version": "18.4.12"},
            [
                "BAKE_CHEF_METHOD=omnitruck",
                "BAKE_CHEF_PRODUCT=cinc",
                "BAKE_CHEF_VERSION=18.4.12",
                "BAKE_CHEF_URL=",
                "BAKE_CHEF_SHA256=",
            ],
        ),
        (
            {"method": "url", "url": "https://pkgs.example/chef_18.5.0-1_amd64.deb", "sha256": SHA},
            [
                "BAKE_CHEF_METHOD=url",
                "BAKE_CHEF_PRODUCT=chef",
                "BAKE_CHEF_VERSION=",
                "BAKE_CHEF_URL=https://pkgs.example/chef_18.5.0-1_amd64.deb",
                f"BAKE_CHEF_SHA256={SHA}",
            ],
        ),
        (
            {"method": "url", "url": "s3://bake-packages/chef.deb", "sha256": SHA.upper()},
            [
                "BAKE_CHEF_METHOD=url",
                "BAKE_CHEF_PRODUCT=chef",
                "BAKE_CHEF_VERSION=",
                "BAKE_CHEF_URL=${var.chef_package_url}",
                f"BAKE_CHEF_SHA256={SHA}",
            ],
        ),
        (
            {"method": "preinstalled", "product": "cinc"},
            [
                "BAKE_CHEF_METHOD=preinstalled",
                "BAKE_CHEF_PRODUCT=cinc",
                "BAKE_CHEF_VERSION=",
                "BAKE_CHEF_URL=",
                "BAKE_CHEF_SHA256=",
            ],
        ),
    ],
    ids=["omnitruck-chef", "omnitruck-cinc", "url-https", "url-s3", "preinstalled"],
)
def test_install_environment_of_each_method(
    tmp_path: Path, client: dict[str, str], environment: list[str]
) -> None:
    ctx = chef_context(tmp_path, client=client)
    rendered, blocks = render(ctx)
    assert blocks[0]["shell"]["environment_vars"] == environment
    product = client.get("product", "chef")
    assert blocks[3]["shell"]["environment_vars"][0] == f"BAKE_CHEF_PRODUCT={product}"


def test_an_s3_package_is_the_presigned_variable_and_https_is_literal(tmp_path: Path) -> None:
    s3 = {"method": "url", "url": "s3://bake-packages/chef.deb", "sha256": SHA}
    text = render(chef_context(tmp_path / "s3", client=s3))[0].text
    assert '"BAKE_CHEF_URL=${var.chef_package_url}"' in text
    assert "s3://" not in text
    https = {"method": "url", "url": "https://pkgs.example/${x}.deb", "sha256": SHA}
    text = render(chef_context(tmp_path / "https", client=https))[0].text
    assert '"BAKE_CHEF_URL=https://pkgs.example/$${x}.deb"' in text


def test_the_s3_package_to_presign_is_named_once_per_image(tmp_path: Path) -> None:
    s3 = {"method": "url", "url": "s3://bake-packages/chef.deb", "sha256": SHA}
    assert chef.s3_package_url(chef_context(tmp_path / "s3", client=s3).require_image()) == (
        "s3://bake-packages/chef.deb"
    )
    assert chef.s3_package_url(chef_context(tmp_path / "omnitruck").require_image()) is None
    same = make_context(
        tmp_path / "same",
        steps=[{"chef": {**WEB, "client": s3}}, {"chef": {**WEB, "client": s3}}],
    )
    assert chef.s3_package_url(same.require_image()) == "s3://bake-packages/chef.deb"


def test_converge_gets_the_build_time_lineage_as_variables(tmp_path: Path) -> None:
    rendered, blocks = render(chef_context(tmp_path))
    assert blocks[3]["shell"]["environment_vars"] == [
        "BAKE_CHEF_PRODUCT=chef",
        "BAKE_IMAGE=base",
        "BAKE_DIGEST=${var.build_digest}",
        "BAKE_SOURCE_AMI=${var.source_ami}",
        "BAKE_RUN_ID=${var.run_id}",
    ]
    assert '"BAKE_DIGEST=${var.build_digest}"' in rendered.text


def test_node_json_holds_run_list_attributes_and_image_but_no_build_values(tmp_path: Path) -> None:
    attributes = {"golden_web": {"app": {"port": 8081}}, "bake": {"lineage": {"team": "web"}}}
    ctx = chef_context(tmp_path, attributes=attributes)
    render(ctx)
    node = json.loads((chef_dir(ctx) / "node.json").read_text())
    assert node == {
        "run_list": ["recipe[golden_web]"],
        "golden_web": {"app": {"port": 8081}},
        "bake": {"lineage": {"team": "web", "image": "base"}},
    }
    client_rb = (chef_dir(ctx) / "client.rb").read_text()
    assert "local_mode true" in client_rb
    assert "cookbook_path ['/tmp/bake-chef/cookbooks']" in client_rb
    assert "file_cache_path '/tmp/bake-chef/cache'" in client_rb


def test_only_the_cookbooks_the_run_list_needs_are_uploaded(tmp_path: Path) -> None:
    shutil.copytree(REPO / "cookbooks", tmp_path / "cookbooks")
    unused = tmp_path / "cookbooks" / "unused"
    (unused / "recipes").mkdir(parents=True)
    (unused / "metadata.rb").write_text("name 'unused'\nversion '0.1.0'\n")
    (unused / "recipes" / "default.rb").write_text("this is not ruby (\n")
    ctx = chef_context(tmp_path, run_list=["recipe[golden_base::sysctl]"])
    render(ctx)
    assert sorted(p.name for p in (chef_dir(ctx) / "cookbooks").iterdir()) == ["golden_base"]

    web = chef_context(tmp_path, run_list=["recipe[golden_web::app]"])
    render(web)
    staged = sorted(p.name for p in (chef_dir(web) / "cookbooks").iterdir())
    assert staged == ["golden_base", "golden_web"]


def test_every_uploaded_file_goes_into_the_build_digest(tmp_path: Path) -> None:
    ctx = chef_context(tmp_path)
    rendered, _ = render(ctx)
    staged = {p for p in (chef_dir(ctx) / "cookbooks").rglob("*") if p.is_file()}
    assert chef_dir(ctx) / "cookbooks" / "golden_web" / "recipes" / "app.rb" in staged
    assert staged <= set(rendered.files)
    names = {p.name for p in rendered.files}
    assert {"chef-install.sh", "chef-converge.sh", "node.json", "client.rb"} <= names


def test_rendering_again_keeps_node_json_and_drops_cookbooks_no_longer_needed(
    tmp_path: Path,
) -> None:
    ctx = chef_context(tmp_path)
    render(ctx)
    node_json = chef_dir(ctx) / "node.json"
    written = node_json.stat().st_mtime_ns
    render(ctx)
    assert node_json.stat().st_mtime_ns == written
    base_only = chef_context(tmp_path, run_list=["recipe[golden_base]"])
    render(base_only)
    assert not (chef_dir(ctx) / "cookbooks" / "golden_web").exists()


def test_shell_blocks_run_through_the_targets_execute_command(tmp_path: Path) -> None:
    ctx = chef_context(tmp_path)
    sudo = "chmod +x {{ .Path }}; sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    step_context = StepContext(
        config=ctx.config,
        image=ctx.require_image(),
        target="aws",
        scripts=tmp_path / "packer" / "scripts",
        mirror="",
        security_mirror="",
        execute_command=sudo,
        runner=ctx.runner,
        render_dir=tmp_path / "render",
    )
    blocks = chef.provisioner_blocks(ChefStep.model_validate(WEB), step_context)
    assert [block.settings.get("execute_command") for block in blocks] == [sudo, None, None, sudo]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"run_list": ["recipe[nope]"]}, r"run_list recipe\[nope\]: no cookbook folder 'nope'"),
        (
            {"run_list": ["recipe[golden_web::nope]"]},
            r"run_list recipe\[golden_web::nope\]: cookbook 'golden_web' has no recipes/nope\.rb",
        ),
    ],
)
def test_a_run_list_naming_no_recipe_is_named_before_packer_runs(
    tmp_path: Path, options: dict[str, Any], problem: str
) -> None:
    ctx = chef_context(tmp_path, **options)
    with pytest.raises(ConfigError, match=r"^images\.base\.steps: chef: " + problem) as raised:
        render_image(ctx, ctx.require_image())
    assert "\n" not in str(raised.value)
    assert raised.value.exit_code == 2
    assert not packer_validated(ctx)


def break_cookbooks(tmp_path: Path, path: str, old: str, new: str) -> None:
    """A copy of the repository's cookbooks with one text replaced in one file."""
    shutil.copytree(REPO / "cookbooks", tmp_path / "cookbooks")
    target = tmp_path / "cookbooks" / path
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("path", "old", "new", "problem"),
    [
        (
            "golden_web/metadata.rb",
            "depends 'golden_base'",
            "depends 'golden_base'\ndepends 'golden_tls'",
            r"cookbooks/golden_web/metadata\.rb: depends 'golden_tls', but there is no cookbook "
            r"folder cookbooks/golden_tls",
        ),
        (
            "golden_web/recipes/app.rb",
            "group app['group'] do",
            "group app['group'] do do",
            r"cookbooks/golden_web/recipes/app\.rb:\d+: syntax error",
        ),
        (
            "golden_base/templates/sysctl.conf.erb",
            "<% end -%>",
            "<% end end -%>",
            r"cookbooks/golden_base/templates/sysctl\.conf\.erb:\d+: syntax error",
        ),
        (
            "golden_web/recipes/default.rb",
            "golden_web::nginx",
            "golden_web::apache",
            r"cookbooks/golden_web/recipes/default\.rb:9: include_recipe 'golden_web::apache': no "
            r"cookbooks/golden_web/recipes/apache\.rb",
        ),
        (
            "golden_web/recipes/default.rb",
            "golden_base::lineage",
            "golden_extra::lineage",
            r"recipes/default\.rb:7: include_recipe 'golden_extra::lineage' needs depends "
            r"'golden_extra' in golden_web's metadata\.rb",
        ),
        (
            "golden_web/recipes/nginx.rb",
            "golden-web.nginx.conf.erb",
            "site.conf.erb",
            r"recipes/nginx\.rb:\d+: template source 'site\.conf\.erb' is not in "
            r"cookbooks/golden_web/templates",
        ),
        (
            "golden_base/metadata.rb",
            "name 'golden_base'",
            "name 'base'",
            r"golden_base/metadata\.rb: name 'base' differs from its folder 'golden_base'",
        ),
    ],
    ids=[
        "missing-depends",
        "recipe-syntax",
        "template-syntax",
        "missing-include",
        "include-without-depends",
        "missing-template",
        "metadata-name",
    ],
)
def test_a_broken_cookbook_stops_the_render_before_packer(
    tmp_path: Path, path: str, old: str, new: str, problem: str
) -> None:
    break_cookbooks(tmp_path, path, old, new)
    ctx = chef_context(tmp_path)
    with pytest.raises(ConfigError, match=r"^images\.base\.steps: chef: .*" + problem) as raised:
        render_image(ctx, ctx.require_image())
    assert "\n" not in str(raised.value)
    assert not packer_validated(ctx)
    assert not (chef_dir(ctx) / "node.json").exists()


def test_a_missing_cookbooks_folder_is_named(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, steps=[{"chef": WEB}])
    with pytest.raises(ConfigError, match=r"^images\.base\.steps: chef: no cookbooks folder at "):
        render_image(ctx, ctx.require_image())


class NoRubyRunner(FakeRunner):
    """Starts `ruby` from a path where there is none, so the real Runner reports it missing."""

    missing: Path = Path("/nonexistent/ruby")

    def run(self, argv: Sequence[str], **kwargs: Any) -> Completed:  # type: ignore[override]
        if str(argv[0]) == "ruby":
            return Runner().run([str(self.missing), *argv[1:]], **kwargs)
        return super().run(argv, **kwargs)


def test_without_ruby_cookbooks_cannot_be_checked_and_the_fix_is_named(tmp_path: Path) -> None:
    ctx = chef_context(tmp_path)
    ctx.runner = NoRubyRunner().on("packer", stdout="Packer v1.6.6\n")
    with pytest.raises(InputError, match=r"cookbooks cannot be checked: .*apt-get install ruby"):
        render_image(ctx, ctx.require_image())
    assert not packer_validated(ctx)


def test_check_cookbooks_lists_every_problem_of_every_cookbook(tmp_path: Path) -> None:
    break_cookbooks(tmp_path, "golden_web/metadata.rb", "depends 'golden_base'", "depends 'x'")
    (tmp_path / "cookbooks" / "golden_base" / "recipes" / "sshd.rb").write_text("if true\n")
    with pytest.raises(InputError) as raised:
        cookbooks.check_cookbooks(Runner(), tmp_path / "cookbooks")
    message = str(raised.value)
    assert "golden_web/metadata.rb: depends 'x'" in message
    assert "cookbooks/golden_base/recipes/sshd.rb:1: syntax error" in message
    assert "include_recipe 'golden_base::lineage' needs depends 'golden_base'" in message


SCRIPTS = REPO / "packer" / "scripts"
LINEAGE = {
    "BAKE_IMAGE": "web",
    "BAKE_DIGEST": "ab" * 32,
    "BAKE_SOURCE_AMI": "ami-0123456789abcdef0",
    "BAKE_RUN_ID": "20250101T000000Z-abc123",
}


@pytest.mark.parametrize("script", ["chef-install.sh", "chef-converge.sh"])
def test_scripts_are_valid_posix_sh(script: str) -> None:
    text = (SCRIPTS / script).read_text()
    assert text.startswith("#!/bin/sh\n# ")
    assert "\nset -eu\n" in text
    assert Runner().run(["sh", "-n", str(SCRIPTS / script)], check=False).ok


def test_converge_script_runs_the_client_in_local_mode_and_accepts_the_licence() -> None:
    text = (SCRIPTS / "chef-converge.sh").read_text()
    assert 'client="${BAKE_CHEF_PRODUCT}-client"' in text
    assert 'set -- -z -j "$staging/node.json" -c "$staging/client.rb"' in text
    assert "export CHEF_LICENSE=accept" in text
    assert 'set -- "$@" --chef-license accept' in text
    assert 'banner=$("$client" --version' in text


def fake_client(bin_dir: Path, name: str, banner: str, record: Path) -> None:
    """A chef-client stand-in: prints `banner` for --version, otherwise records how it was run."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / name
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "{banner}"; exit 0; fi\n'
        f'{{ echo "args=$*"; echo "CHEF_LICENSE=${{CHEF_LICENSE:-}}"; '
        f'cat "$BAKE_RECORD_DIR/build.env"; }} > {record}\n'
    )
    script.chmod(0o755)


def run_script(tmp_path: Path, script: str, env: dict[str, str]):
    """Run a chef script as a build would, with its staging folder and /etc/bake in tmp_path."""
    path = f"{tmp_path / 'bin'}:/usr/bin:/bin"
    return Runner().run(
        ["sh", str(SCRIPTS / script)],
        check=False,
        cwd=tmp_path,
        env={
            "PATH": path,
            "TMPDIR": str(tmp_path),
            "BAKE_CHEF_STAGING": str(tmp_path / "stage"),
            "BAKE_RECORD_DIR": str(tmp_path / "etc-bake"),
            **env,
        },
    )


def upload(tmp_path: Path) -> Path:
    stage = tmp_path / "stage"
    (stage / "cookbooks").mkdir(parents=True)
    (stage / "node.json").write_text("{}")
    (stage / "client.rb").write_text("local_mode true\n")
    return stage


@pytest.mark.parametrize(
    ("product", "banner", "licensed"),
    [
        ("chef", "Chef Infra Client: 18.5.0", True),
        ("chef", "Chef Infra Client: 15.0.300", True),
        ("chef", "Chef: 14.15.6", False),
        ("cinc", "Cinc Client: 18.5.0", False),
    ],
)
def test_converge_accepts_the_licence_only_where_the_client_needs_it(
    tmp_path: Path, product: str, banner: str, licensed: bool
) -> None:
    record = tmp_path / "record"
    fake_client(tmp_path / "bin", f"{product}-client", banner, record)
    stage = upload(tmp_path)
    result = run_script(tmp_path, "chef-converge.sh", {"BAKE_CHEF_PRODUCT": product, **LINEAGE})
    assert result.ok, result.stderr
    lines = record.read_text().splitlines()
    flags = f"-z -j {stage}/node.json -c {stage}/client.rb --no-color"
    if licensed:
        assert lines[:2] == [f"args={flags} --chef-license accept", "CHEF_LICENSE=accept"]
    else:
        assert lines[:2] == [f"args={flags}", "CHEF_LICENSE="]
    assert lines[2:6] == [f"{key}={value}" for key, value in LINEAGE.items()]
    assert lines[6].startswith("BAKE_BUILT=20")
    assert not stage.exists()
    assert not (tmp_path / "etc-bake" / "build.env").exists()


def test_converge_refuses_a_lineage_value_build_env_cannot_hold(tmp_path: Path) -> None:
    fake_client(tmp_path / "bin", "chef-client", "Chef Infra Client: 18.5.0", tmp_path / "record")
    upload(tmp_path)
    env = {"BAKE_CHEF_PRODUCT": "chef", **LINEAGE, "BAKE_RUN_ID": "r1\nBAKE_DIGEST=forged"}
    result = run_script(tmp_path, "chef-converge.sh", env)
    assert result.returncode == 1
    assert "has characters build.env cannot hold" in result.stderr
    assert not (tmp_path / "record").exists()


def test_install_with_a_preinstalled_client_makes_the_upload_folder(tmp_path: Path) -> None:
    fake_client(tmp_path / "bin", "cinc-client", "Cinc Client: 18.5.0", tmp_path / "record")
    env = {"BAKE_CHEF_METHOD": "preinstalled", "BAKE_CHEF_PRODUCT": "cinc"}
    result = run_script(tmp_path, "chef-install.sh", env)
    assert result.ok, result.stderr
    assert "bake-chef: Cinc Client: 18.5.0" in result.stdout
    assert (tmp_path / "stage" / "cookbooks").is_dir()


def test_install_fails_when_the_preinstalled_client_is_missing(tmp_path: Path) -> None:
    env = {"BAKE_CHEF_METHOD": "preinstalled", "BAKE_CHEF_PRODUCT": "chef"}
    result = run_script(tmp_path, "chef-install.sh", env)
    assert result.returncode == 1
    assert "chef-client is not installed (method preinstalled)" in result.stderr


def test_install_skips_omnitruck_when_the_pinned_version_is_there(tmp_path: Path) -> None:
    fake_client(tmp_path / "bin", "chef-client", "Chef Infra Client: 18.5.0", tmp_path / "record")
    env = {
        "BAKE_CHEF_METHOD": "omnitruck",
        "BAKE_CHEF_PRODUCT": "chef",
        "BAKE_CHEF_VERSION": "18.5.0",
    }
    result = run_script(tmp_path, "chef-install.sh", env)
    assert result.ok, result.stderr
    assert "chef-client 18.5.0 is already installed" in result.stdout


def test_install_refuses_a_package_whose_sha256_differs(tmp_path: Path) -> None:
    package = tmp_path / "chef.deb"
    package.write_bytes(b"not the package you pinned")
    dpkg = tmp_path / "bin" / "dpkg"
    dpkg.parent.mkdir()
    dpkg.write_text(f"#!/bin/sh\ntouch {tmp_path / 'dpkg-ran'}\n")
    dpkg.chmod(0o755)
    env = {
        "BAKE_CHEF_METHOD": "url",
        "BAKE_CHEF_PRODUCT": "chef",
        "BAKE_CHEF_URL": package.as_uri(),
        "BAKE_CHEF_SHA256": SHA,
    }
    result = run_script(tmp_path, "chef-install.sh", env)
    assert result.returncode == 1
    assert f"not {SHA}" in result.stderr
    assert not (tmp_path / "dpkg-ran").exists()
