"""The Chef run that made the web image left nothing of itself behind."""

from __future__ import annotations


def test_the_chef_run_left_nothing_behind(host):
    assert not host.file("/tmp/bake-chef").exists
    assert not host.file("/etc/bake/build.env").exists
