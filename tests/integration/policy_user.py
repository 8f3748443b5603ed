"""Running as an IAM user that holds only one policy, on the test session's moto server.

The user and its access key are made while moto answers everyone; then moto is told to enforce
IAM (`POST /moto-api/reset-auth`, the server-mode switch behind INITIAL_NO_AUTH_ACTION_COUNT) until
the block ends. moto authorizes only the action of each request: for EC2, Elastic Load Balancing,
Auto Scaling, SSM and DynamoDB it checks the policy against the resource `*` and ignores
conditions (moto/core/responses.py passes "*", moto/iam/access_control.py). So the user is given the
policy's actions with `Resource: "*"`, and the ARNs and conditions are checked separately
(tests/integration/iam_requests.py).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bake.aws.session import Cloud

USER = "bake-runner"
PROFILE = "bake-runner"


def actions_only(document: dict[str, Any]) -> dict[str, Any]:
    """The policy as moto can enforce it: every statement's actions, on every resource."""
    statements = [
        {"Sid": s["Sid"], "Effect": s["Effect"], "Action": s["Action"], "Resource": "*"}
        for s in document["Statement"]
    ]
    return {**document, "Statement": statements}


def create_user(cloud: Cloud, document: dict[str, Any]) -> dict[str, str]:
    """A user holding only `document`; its access key id and secret."""
    iam = cloud.client("iam")
    iam.create_user(UserName=USER)
    iam.put_user_policy(UserName=USER, PolicyName="goldenbake", PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=USER)["AccessKey"]
    return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


def write_profile(folder: Path, key: dict[str, str]) -> Path:
    """A shared credentials file with the user's key as profile PROFILE."""
    path = folder / "aws-credentials"
    path.write_text(
        f"[{PROFILE}]\naws_access_key_id = {key['id']}\naws_secret_access_key = {key['secret']}\n"
    )
    return path


def _reset_auth(endpoint: str, free_requests: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=free_requests.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


@contextmanager
def enforcing(endpoint: str) -> Iterator[None]:
    """moto checks every request's signature and action against its caller's policies."""
    _reset_auth(endpoint, "0")
    try:
        yield
    finally:
        _reset_auth(endpoint, "inf")
