"""Fixtures of the aws-target tests."""

from __future__ import annotations

import pytest

from tests.integration.aws_project import BASE_PARAMETER


@pytest.fixture
def source_ami(cloud) -> str:
    """A public AMI with an EBS root, as the SSM parameter of a distribution names one."""
    (stock, *_) = cloud.client("ec2").describe_images(
        Owners=["amazon"], Filters=[{"Name": "root-device-type", "Values": ["ebs"]}]
    )["Images"]
    ami = stock["ImageId"]
    cloud.client("ssm").put_parameter(Name=BASE_PARAMETER, Value=ami, Type="String")
    return ami
