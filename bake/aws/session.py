"""One boto3 session per run, pointed at real AWS or at the local target's endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

# Credentials the local target's moto server accepts; real AWS never sees them.
LOCAL_CREDENTIALS = {"aws_access_key_id": "goldenbake", "aws_secret_access_key": "goldenbake"}


@dataclass
class Cloud:
    """Clients for one account and region. `endpoint_url` is set on the local target, and on the aws
    target pointed at an AWS-compatible endpoint; there the endpoint's own credentials are used
    unless a profile is named."""

    region: str
    endpoint_url: str | None = None
    profile: str | None = None
    _session: Any = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    # Facts that do not change once read, kept for the life of this Cloud so that a swap asks once:
    # a load balancer's ARN by name, a target group by name, a numbered launch template version.
    known: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def forget(self) -> None:
        """Drop what `known` holds (the endpoint behind it was emptied or replaced)."""
        self.known.clear()

    @property
    def session(self) -> boto3.Session:
        if self._session is None:
            if self.endpoint_url and not self.profile:
                self._session = boto3.Session(region_name=self.region, **LOCAL_CREDENTIALS)
            else:
                self._session = boto3.Session(region_name=self.region, profile_name=self.profile)
        return self._session

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(
                service,
                endpoint_url=self.endpoint_url,
                config=BotoConfig(retries={"max_attempts": 5, "mode": "standard"}),
            )
        return self._clients[service]
