"""What the web image must prove from golden_base: the lineage record names this build, and the
Chef run left nothing of itself behind."""

from __future__ import annotations

import json


def test_lineage_record_names_this_build(host, expected):
    record = host.file("/etc/bake/lineage.json")
    assert record.exists
    assert record.user == "root"
    assert record.mode == 0o644
    lineage = json.loads(record.content_string)
    assert lineage["image"] == expected.image
    assert lineage["digest"] == expected.digest
    assert lineage["source_ami"] == expected.source_ami
    assert lineage["run_id"]
    assert lineage["built"]
    assert "parent" in lineage


def test_the_chef_run_left_nothing_behind(host):
    assert not host.file("/tmp/bake-chef").exists
    assert not host.file("/etc/bake/build.env").exists
