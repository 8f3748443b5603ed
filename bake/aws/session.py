"""One boto3 session per run, pointed at real AWS or at the local target's endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

# Credentials the local target's moto server accepts; real AWS never sees them.
LOCAL_CREDENTIALS = {"aws_access_key_id": "goldenbake", "aws_secret_access_key": "goldenbake"}
# How long an assumed role's credentials last (the default maximum of a role): they are renewed
# before they expire, so this bounds nothing but how often.
ROLE_SECONDS = 3600


@dataclass
class Cloud:
    """Clients for one account and region. `endpoint_url` is set on the local target, and on the aws
    target pointed at an AWS-compatible endpoint; there the endpoint's own credentials are used
    unless a profile is named. With `role_arn`, every call is made as that role, assumed from those
    credentials and assumed again before it expires."""

    region: str
    endpoint_url: str | None = None
    profile: str | None = None
    role_arn: str | None = None
    role_session_name: str = "goldenbake"
    _session: Any = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    # Facts that do not change once read, kept for the life of this Cloud so that a swap asks once:
    # a load balancer's ARN by name, a target group by name, a numbered launch template version.
    known: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    # The Cloud whose identity assumes `role_arn` (another account's role); None: the runner's.
    _source: Cloud | None = field(default=None, repr=False)

    def forget(self) -> None:
        """Drop what `known` holds (the endpoint behind it was emptied or replaced)."""
        self.known.clear()

    def in_region(self, region: str) -> Cloud:
        """The same identity in another region (its own clients)."""
        if region == self.region:
            return self
        there = Cloud(
            region, self.endpoint_url, self.profile, self.role_arn, self.role_session_name
        )
        there._source = self._source.in_region(region) if self._source else None
        return there

    def as_role(self, role_arn: str) -> Cloud:
        """The same region as `role_arn` (another account's role), assumed from this identity."""
        other = Cloud(
            self.region, self.endpoint_url, self.profile, role_arn, self.role_session_name
        )
        other._source = self
        return other

    @property
    def session(self) -> boto3.Session:
        if self._session is None:
            if self._source is not None:
                base = self._source.session
            elif self.endpoint_url and not self.profile:
                base = boto3.Session(region_name=self.region, **LOCAL_CREDENTIALS)
            else:
                base = boto3.Session(region_name=self.region, profile_name=self.profile)
            self._session = self._assumed(base) if self.role_arn else base
        return self._session

    def _assumed(self, base: boto3.Session) -> boto3.Session:
        """A session holding `role_arn`'s credentials, assumed from `base`'s: botocore assumes the
        role again when they near their expiry, so a run longer than a session never fails on
        expired credentials."""
        from botocore.credentials import RefreshableCredentials
        from botocore.session import get_session

        sts = base.client("sts", endpoint_url=self.endpoint_url)

        def assume() -> dict[str, str]:
            given = sts.assume_role(
                RoleArn=self.role_arn,
                RoleSessionName=self.role_session_name[:64],
                DurationSeconds=ROLE_SECONDS,
            )["Credentials"]
            return {
                "access_key": given["AccessKeyId"],
                "secret_key": given["SecretAccessKey"],
                "token": given["SessionToken"],
                "expiry_time": given["Expiration"].isoformat(),
            }

        assumed = get_session()
        assumed._credentials = RefreshableCredentials.create_from_metadata(
            metadata=assume(), refresh_using=assume, method="sts-assume-role"
        )
        return boto3.Session(botocore_session=assumed, region_name=self.region)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(
                service,
                endpoint_url=self.endpoint_url,
                config=BotoConfig(retries={"max_attempts": 5, "mode": "standard"}),
            )
        return self._clients[service]
