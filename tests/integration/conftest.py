"""Fixtures of the aws-target tests."""

from __future__ import annotations

import pytest

from tests.integration.aws_project import publish_source_ami


@pytest.fixture
def source_ami(cloud) -> str:
    """A public AMI with an EBS root, as the SSM parameter of a distribution names one."""
    return publish_source_ami(cloud)
