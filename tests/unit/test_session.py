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


ROLE = "arn:aws:iam::123456789012:role/goldenbake-fleet"


def test_with_a_role_every_call_is_made_as_the_role_and_renewed_before_it_expires(
    moto_endpoint: str, cloud: Cloud
) -> None:
    assumed = Cloud("us-east-1", moto_endpoint, role_arn=ROLE, role_session_name="nightly")

    identity = assumed.client("sts").get_caller_identity()

    assert identity["Arn"] == "arn:aws:sts::123456789012:assumed-role/goldenbake-fleet/nightly"
    credentials = assumed.session.get_credentials()
    first = credentials.get_frozen_credentials().access_key
    assert first != LOCAL_CREDENTIALS["aws_access_key_id"], "the role's, not the runner's"
    # Near its expiry, the role is assumed again: a long build never signs with expired keys.
    credentials._expiry_time = credentials._expiry_time.replace(year=2000)
    assert credentials.get_frozen_credentials().access_key != first
    assert assumed.client("sts").get_caller_identity()["Arn"] == identity["Arn"]


def test_another_region_keeps_the_identity(moto_endpoint: str) -> None:
    home = Cloud("us-east-1", moto_endpoint, "runner", ROLE, "nightly")

    there = home.in_region("eu-west-1")

    assert (there.region, there.endpoint_url, there.profile, there.role_arn) == (
        "eu-west-1", moto_endpoint, "runner", ROLE,
    )  # fmt: skip
    assert there.role_session_name == "nightly"
    assert home.in_region("us-east-1") is home
