"""The shipped `web` role: nginx on port 80 answers the health check, and `/` says who the machine
is (its instance id, AMI and type from the instance metadata service, its running kernel, its
image's lineage digest), so a request through the load balancer shows which machine served it."""

from __future__ import annotations

import json

import pytest

METADATA = "http://169.254.169.254/latest"


@pytest.fixture(scope="module")
def page(host) -> dict:
    return json.loads(host.check_output("curl -fsS http://127.0.0.1/"))


@pytest.fixture(scope="module")
def metadata(host):
    token = host.check_output(
        f"curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' {METADATA}/api/token"
    )

    def read(path: str) -> str:
        return host.check_output(
            f"curl -fsS -H 'X-aws-ec2-metadata-token: {token}' {METADATA}/meta-data/{path}"
        )

    return read


def test_nginx_and_the_identity_unit_are_enabled_and_ran(host):
    assert host.service("nginx").is_running
    assert host.service("nginx").is_enabled
    assert host.service("bake-identity").is_enabled
    assert host.check_output("systemctl show -p ActiveState --value bake-identity") == "active"


def test_nginx_listens_on_port_80(host):
    assert host.socket("tcp://0.0.0.0:80").is_listening


def test_health_check_answers_ok(host):
    assert host.check_output("curl -fsS http://127.0.0.1/health") == "ok"


def test_the_page_names_this_instance_and_its_ami(page, metadata):
    assert page["instance_id"] == metadata("instance-id")
    assert page["instance_id"].startswith("i-")
    assert page["ami_id"] == metadata("ami-id")
    assert page["ami_id"].startswith("ami-")
    assert page["instance_type"] == metadata("instance-type")


def test_the_page_names_the_running_kernel(host, page):
    assert page["kernel"] == host.check_output("uname -r")


def test_the_page_names_this_build(page, expected):
    assert (page["image"], page["digest"]) == (expected.image, expected.digest)


def test_the_page_names_the_release_this_boot_installed(host, page):
    """None on a machine whose user data names no release (a verification machine)."""
    installed = host.run("cat /run/bake/release.json 2>/dev/null").stdout
    expected = json.loads(installed).get("release") if installed.strip() else None
    assert page["release"] == expected


def test_the_page_is_json(host):
    content_type = host.check_output(
        "curl -fsS -o /dev/null -w '%{content_type}' http://127.0.0.1/"
    )
    assert content_type.startswith("application/json")


def test_anything_else_is_not_found(host):
    status = host.check_output("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/etc/passwd")
    assert status == "404"


def test_the_metadata_service_wants_an_imdsv2_token(host):
    status = host.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' {METADATA}/meta-data/instance-id"
    )
    assert status == "401"


def test_nginx_configuration_passes_its_own_test(host):
    with host.sudo():
        result = host.run("nginx -t")
    assert result.rc == 0, result.stderr


def test_debian_default_site_is_gone(host):
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    assert host.file("/etc/nginx/sites-enabled/bake-web").is_symlink
