"""Which credentials a Cloud signs with: an endpoint's own, unless a profile is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bake.aws.session import LOCAL_CREDENTIALS, Cloud


def test_an_endpoint_uses_its_own_credentials_unless_a_profile_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[runner]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = example\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    endpoint = "http://127.0.0.1:1"
    local = Cloud("us-east-1", endpoint).session.get_credentials()
    assert local.access_key == LOCAL_CREDENTIALS["aws_access_key_id"]
    named = Cloud("us-east-1", endpoint, "runner").session.get_credentials()
    assert named.access_key == "AKIAEXAMPLE"
