"""Telling a team how a rollout went: a Slack-compatible webhook and an SNS topic ([notify] in
bake.toml), a message per failure and one per finished rollout. A message that cannot be
delivered is a warning on the console, never a failed rollout."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from bake.report import Report
from bake.settings import NotifySettings

TIMEOUT = 10.0


class Notifier:
    def __init__(
        self, settings: NotifySettings, cloud: Callable[[], Any], warn: Callable[[str], None]
    ) -> None:
        self.settings = settings
        self.cloud = cloud  # the target's cloud, built only when an SNS topic is set
        self.warn = warn
        self.sent: list[str] = []

    @property
    def enabled(self) -> bool:
        return bool(self.settings.webhook or self.settings.sns_topic)

    def send(self, text: str) -> None:
        """Deliver one message everywhere configured; a failure is a warning."""
        if self.settings.webhook:
            self._post(self.settings.webhook, {"text": text})
        if self.settings.sns_topic:
            try:
                self.cloud().client("sns").publish(
                    TopicArn=self.settings.sns_topic, Subject="goldenbake rollout", Message=text
                )
            except Exception as exc:  # any failure to deliver is only a warning
                self.warn(f"warning: notification to {self.settings.sns_topic} failed: {exc}")
        self.sent.append(text)

    def _post(self, url: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                answer.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.warn(f"warning: notification to {url} failed: {getattr(exc, 'reason', exc)}")


def failure_text(rollout_id: str, subject: str, error: str) -> str:
    return f"goldenbake rollout {rollout_id}: {subject} failed: {error}"


def summary_text(report: Report) -> str:
    """One message for a finished rollout: its result, each image and each service."""
    lines = [f"goldenbake rollout {report.rollout_id} on {report.target}: {report.result}"]
    for image in report.images:
        if image.action != "up to date":
            change = f" {image.old_ami or '-'} -> {image.new_ami}" if image.new_ami else ""
            lines.append(f"• image {image.name}: {image.action}{change}")
    for service in report.services:
        proven = sum(1 for instance in service.instances if instance.ok)
        lines.append(
            f"• service {service.name}: {service.action}, {service.verdict}"
            f" ({proven}/{len(service.instances)} instances proven)"
            + (f": {service.error}" if service.error else "")
        )
    return "\n".join(lines)
