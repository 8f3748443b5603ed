"""The cookbooks in cookbooks/: every file compiles with real Ruby, every reference resolves, and
the defaults keep the promises the image suites check. No Chef client runs here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bake import cookbooks
from bake.runner import Runner

REPO = Path(__file__).resolve().parents[2]
COOKBOOKS = REPO / "cookbooks"
NAMES = ["golden_base", "golden_web"]
RUBY_FILES = sorted(COOKBOOKS.rglob("*.rb"))

# Evaluates attributes files as Chef would, `default[...]` autovivifying, and prints them as JSON.
ATTRIBUTES = r"""
require "json"
TREE = Hash.new { |hash, key| hash[key] = Hash.new(&hash.default_proc) }
def default
  TREE
end
ARGV.each { |path| eval(File.read(path), binding, path) }
puts JSON.generate(TREE)
"""

# Renders one template with the variables given as JSON, the way a `template` resource does.
RENDER = r"""
require "erb"
require "json"
JSON.parse(ARGV[1]).each { |name, value| instance_variable_set("@#{name}", value) }
print ERB.new(File.read(ARGV[0]), trim_mode: "-").result(binding)
"""


def ruby(*argv: str) -> str:
    return Runner().run(["ruby", *argv]).stdout


@pytest.fixture(scope="module")
def attributes() -> dict[str, Any]:
    files = [str(COOKBOOKS / name / "attributes" / "default.rb") for name in NAMES]
    return json.loads(ruby("-e", ATTRIBUTES, *files))


def rendered(cookbook: str, template: str, **variables: Any) -> str:
    path = COOKBOOKS / cookbook / "templates" / template
    return ruby("-e", RENDER, str(path), json.dumps(variables))


def recipe_text(cookbook: str, recipe: str) -> str:
    return (COOKBOOKS / cookbook / "recipes" / f"{recipe}.rb").read_text()


def includes(cookbook: str, recipe: str) -> list[str]:
    return re.findall(r"^include_recipe '([^']+)'", recipe_text(cookbook, recipe), re.MULTILINE)


def depends(cookbook: str) -> list[str]:
    text = (COOKBOOKS / cookbook / "metadata.rb").read_text()
    return re.findall(r"^depends '([^']+)'", text, re.MULTILINE)


def test_the_cookbooks_folder_holds_the_two_cookbooks() -> None:
    assert sorted(path.name for path in COOKBOOKS.iterdir() if path.is_dir()) == NAMES
    assert len(RUBY_FILES) >= 13


@pytest.mark.parametrize("path", RUBY_FILES, ids=lambda path: str(path.relative_to(COOKBOOKS)))
def test_ruby_c_accepts(path: Path) -> None:
    assert ruby("-c", str(path)).strip() == "Syntax OK"


def test_bake_checks_pass_on_every_cookbook() -> None:
    cookbooks.check_cookbooks(Runner(), COOKBOOKS)


@pytest.mark.parametrize("name", NAMES)
def test_layout_and_metadata(name: str) -> None:
    cookbook = COOKBOOKS / name
    for part in ("metadata.rb", "README.md", "attributes/default.rb", "recipes/default.rb"):
        assert (cookbook / part).is_file(), part
    assert list((cookbook / "templates").glob("*.erb"))
    metadata = (cookbook / "metadata.rb").read_text()
    assert re.search(rf"^name '{name}'$", metadata, re.MULTILINE)
    assert re.search(r"^version '\d+\.\d+\.\d+'$", metadata, re.MULTILINE)
    assert "\nchef_version '>= 15'\n" in metadata
    assert "\nsupports 'debian'\n" in metadata


@pytest.mark.parametrize("name", NAMES)
def test_every_depends_is_a_cookbook_folder(name: str) -> None:
    for dependency in depends(name):
        assert (COOKBOOKS / dependency / "metadata.rb").is_file(), dependency


@pytest.mark.parametrize("name", NAMES)
def test_every_include_recipe_resolves_within_the_dependencies(name: str) -> None:
    for recipe in (COOKBOOKS / name / "recipes").glob("*.rb"):
        for target in includes(name, recipe.stem):
            cookbook, _, included = target.partition("::")
            assert cookbook == name or cookbook in depends(name), target
            assert (COOKBOOKS / cookbook / "recipes" / f"{included or 'default'}.rb").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_every_template_resource_names_an_existing_source_and_passes_variables(name: str) -> None:
    used = set()
    for recipe in (COOKBOOKS / name / "recipes").glob("*.rb"):
        blocks = re.findall(r"^template .*? do\n(.*?)^end$", recipe.read_text(), re.M | re.S)
        for body in blocks:
            (source,) = re.findall(r"^  source '([^']+)'$", body, re.MULTILINE)
            assert (COOKBOOKS / name / "templates" / source).is_file(), source
            assert "  variables(" in body, source
            used.add(source)
    assert used == {path.name for path in (COOKBOOKS / name / "templates").glob("*.erb")}


@pytest.mark.parametrize("name", NAMES)
def test_attributes_are_namespaced_by_cookbook(name: str) -> None:
    text = (COOKBOOKS / name / "attributes" / "default.rb").read_text()
    namespaces = set(re.findall(r"^default\['([^']+)'\]", text, re.MULTILINE))
    # golden_base also declares node['bake'], the lineage bake itself passes in the node JSON.
    assert namespaces == ({name, "bake"} if name == "golden_base" else {name})


def test_golden_base_default_runs_every_part() -> None:
    parts = ["sshd", "sysctl", "timesync", "unattended_upgrades", "lineage"]
    recipes = {path.stem for path in (COOKBOOKS / "golden_base" / "recipes").glob("*.rb")}
    assert recipes == {"default", *parts}
    assert includes("golden_base", "default") == [f"golden_base::{part}" for part in parts]


def test_golden_web_default_adds_lineage_app_and_nginx() -> None:
    assert depends("golden_web") == ["golden_base"]
    assert includes("golden_web", "default") == [
        "golden_base::lineage",
        "golden_web::app",
        "golden_web::nginx",
    ]


def test_services_restart_only_after_their_config_checks_pass() -> None:
    sshd = recipe_text("golden_base", "sshd")
    check = sshd.split("execute 'validate sshd config' do", 1)[1].split("\nend", 1)[0]
    assert "command '/usr/sbin/sshd -t'" in check
    assert "notifies :restart" in check
    assert sshd.count("notifies :restart") == 1
    nginx = recipe_text("golden_web", "nginx")
    check = nginx.split("execute 'validate nginx config' do", 1)[1].split("\nend", 1)[0]
    assert "command '/usr/sbin/nginx -t -q'" in check
    assert "notifies :reload, 'service[nginx]'" in check
    assert nginx.count("notifies :reload") == 1


def test_sshd_defaults_keep_the_base_suites_promises(attributes: dict[str, Any]) -> None:
    settings = attributes["golden_base"]["sshd"]["settings"]
    assert settings["PasswordAuthentication"] == "no"
    assert settings["KbdInteractiveAuthentication"] == "no"
    assert settings["PermitRootLogin"] == "prohibit-password"
    assert settings["MaxAuthTries"] == "3"
    drop_in = rendered("golden_base", "sshd_hardening.conf.erb", settings=settings)
    assert "\nPasswordAuthentication no\n" in drop_in
    assert attributes["golden_base"]["sshd"]["drop_in"].startswith("/etc/ssh/sshd_config.d/")


def test_sysctl_defaults_render_one_line_per_setting(attributes: dict[str, Any]) -> None:
    settings = attributes["golden_base"]["sysctl"]["settings"]
    assert settings["net.ipv4.tcp_syncookies"] == 1
    assert settings["fs.suid_dumpable"] == 0
    text = rendered("golden_base", "sysctl.conf.erb", settings=settings)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [f"{key} = {value}" for key, value in sorted(settings.items())]


def test_unattended_upgrades_take_the_security_origin_only(attributes: dict[str, Any]) -> None:
    upgrades = attributes["golden_base"]["unattended_upgrades"]
    assert upgrades["origins"]
    assert all("label=Debian-Security" in origin for origin in upgrades["origins"])
    assert upgrades["automatic_reboot"] is False
    text = rendered(
        "golden_base",
        "50unattended-upgrades.erb",
        **{
            key: upgrades[key]
            for key in (
                "origins",
                "package_blocklist",
                "remove_unused_dependencies",
                "automatic_reboot",
                "automatic_reboot_time",
            )
        },
    )
    patterns = text.split("Unattended-Upgrade::Origins-Pattern {", 1)[1].split("};", 1)[0]
    assert re.findall(r'"([^"]+)";', patterns) == upgrades["origins"]
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in text
    auto = rendered(
        "golden_base", "20auto-upgrades.erb", update_days=1, upgrade_days=1, autoclean_days=7
    )
    assert 'APT::Periodic::Unattended-Upgrade "1";' in auto


def test_timesync_names_servers(attributes: dict[str, Any]) -> None:
    timesync = attributes["golden_base"]["timesync"]
    text = rendered("golden_base", "timesyncd.conf.erb", **timesync)
    assert "\n[Time]\nNTP=169.254.169.123 " in text
    assert f"\nFallbackNTP={' '.join(timesync['fallback_servers'])}\n" in text


def test_lineage_record_renders_as_json() -> None:
    record = {
        "image": "web",
        "digest": "ab" * 32,
        "source_ami": "ami-0",
        "run_id": "r1",
        "built": "2025-01-01T00:00:00Z",
        "parent": {"image": "base", "parent": None},
    }
    assert json.loads(rendered("golden_base", "lineage.json.erb", record=record)) == record


def test_lineage_recipe_reads_what_the_converge_script_writes() -> None:
    recipe = recipe_text("golden_base", "lineage")
    assert "::File.foreach(settings['build_env'])" in recipe
    assert "key.delete_prefix('BAKE_').downcase" in recipe
    script = (REPO / "packer" / "scripts" / "chef-converge.sh").read_text()
    for key in ("IMAGE", "DIGEST", "SOURCE_AMI", "RUN_ID", "BUILT"):
        assert f"\nBAKE_{key}=" in script
    attributes_text = (COOKBOOKS / "golden_base" / "attributes" / "default.rb").read_text()
    assert "['build_env'] = '/etc/bake/build.env'" in attributes_text


def test_web_app_listens_on_loopback_behind_nginx(attributes: dict[str, Any]) -> None:
    app, nginx = attributes["golden_web"]["app"], attributes["golden_web"]["nginx"]
    assert (app["address"], app["port"], nginx["port"]) == ("127.0.0.1", 8080, 80)
    site = rendered(
        "golden_web",
        "golden-web.nginx.conf.erb",
        port=nginx["port"],
        server_name=nginx["server_name"],
        health_path=nginx["health_path"],
        app_address=app["address"],
        app_port=app["port"],
    )
    assert "listen 80 default_server;" in site
    assert (
        "location = /health {\n        access_log off;\n        default_type text/plain;\n"
        '        return 200 "ok\\n";' in site
    )
    assert "server 127.0.0.1:8080;" in site
    assert "proxy_pass http://golden_web_app;" in site
    assert site.count("{") == site.count("}")


def test_web_app_unit_is_unprivileged_and_hardened(attributes: dict[str, Any]) -> None:
    app = attributes["golden_web"]["app"]
    unit = rendered(
        "golden_web",
        "golden-web-app.service.erb",
        user=app["user"],
        group=app["group"],
        root=app["root"],
        address=app["address"],
        port=app["port"],
    )
    assert "\nUser=golden-web\nGroup=golden-web\n" in unit
    assert (
        "\nExecStart=/usr/bin/python3 -m http.server 8080 --bind 127.0.0.1 "
        "--directory /srv/golden-web\n"
    ) in unit
    for setting in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "WantedBy=multi-user.target",
    ):
        assert f"\n{setting}" in unit
    recipe = recipe_text("golden_web", "app")
    assert "shell '/usr/sbin/nologin'" in recipe
    assert "system true" in recipe
    assert "action [:enable, :start]" in recipe
