"""The lineage record names the build that made this image and the image it started from."""

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
