"""The web role's front door: nginx on port 80 answers the health check itself and proxies the rest
to the app."""

from __future__ import annotations


def test_nginx_is_running_and_enabled(host):
    nginx = host.service("nginx")
    assert nginx.is_running
    assert nginx.is_enabled


def test_nginx_listens_on_port_80(host):
    assert host.socket("tcp://0.0.0.0:80").is_listening


def test_health_check_answers_ok(host):
    assert host.check_output("curl -fsS http://127.0.0.1/health") == "ok"


def test_everything_else_is_proxied_to_the_app(host):
    page = host.check_output("curl -fsS http://127.0.0.1/")
    assert "served by the app, through nginx" in page


def test_nginx_configuration_passes_its_own_test(host):
    with host.sudo():
        result = host.run("nginx -t")
    assert result.rc == 0, result.stderr
    assert "test is successful" in result.stderr


def test_debian_default_site_is_gone(host):
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    assert host.file("/etc/nginx/sites-enabled/golden-web").is_symlink
