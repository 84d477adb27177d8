"""Signed webhook adapter: POSTs each post as JSON, signed per the Standard Webhooks spec.

Headers `webhook-id` (the ledger key: the same on every retry, so a receiver
drops repeats), `webhook-timestamp` (this attempt, unix seconds) and
`webhook-signature` (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` with the
`whsec_` secret), made by the `standardwebhooks` library. Any 2xx is sent; 410
is permanent (the receiver is gone); 401/403 mean the secret is refused; 429
and 5xx are retried, honouring Retry-After. The body:

    {"type": "post.published", "timestamp": "<sent, ISO 8601>",
     "data": {"id", "key", "target", "part", "due", "sent", "text", "link",
              "images": [{"url", "alt"}], "event": {"id", "title", "starts", "ends", "link"}}}

(`event` only for live-event parts.) `oyez check` sends a signed
`{"type": "oyez.ping"}` with a fresh id, which receivers should accept and ignore.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, ClassVar

import requests
import standardwebhooks
from pydantic import SecretStr, field_validator

from scheduler import clock
from scheduler.secrets import redact

from . import http as web
from .base import AdapterSettings, Message, PermanentError, Published

_PLACEHOLDER = re.compile(r"^\$\{\w+\}$")  # an unset ${VAR}, which only a dry run keeps


class WebhookSettings(AdapterSettings):
    """jobs.yaml settings for `adapter: webhook`."""

    url: str
    secret: SecretStr  # whsec_ + base64 of 24-64 random bytes

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        return web.check_base_url(value, "url")

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr) -> SecretStr:
        if not _PLACEHOLDER.match(value.get_secret_value()):
            signer(value)
        return value


def signer(secret: SecretStr) -> standardwebhooks.Webhook:
    """The library's signer for a `whsec_` secret; ValueError (without the secret) if malformed."""
    try:
        return standardwebhooks.Webhook(secret.get_secret_value())
    except (ValueError, standardwebhooks.webhooks.EmptyWebhookSecretError):
        raise ValueError("secret must be whsec_ followed by base64 "
                         "(e.g. from: python -c \"import base64, os; "
                         "print('whsec_' + base64.b64encode(os.urandom(32)).decode())\")") from None


class Webhook:
    """Delivers posts to one receiver URL."""

    Settings: ClassVar[type[AdapterSettings]] = WebhookSettings
    idempotent_for: ClassVar[timedelta] = timedelta(days=36500)  # webhook-id never changes

    def __init__(self, settings: AdapterSettings, http: requests.Session) -> None:
        assert isinstance(settings, WebhookSettings)
        self.url = settings.url
        self.where = f"webhook {redact(self.url)}"
        self.http = http
        self.timeout = web.timeout()
        self._secret = settings.secret

    def publish(self, message: Message) -> Published:
        """POST the post, signed, under its ledger key as webhook-id."""
        sent = clock.now()
        data: dict[str, Any] = {
            "id": message.job_id, "key": message.key, "target": message.target,
            "part": message.part, "due": _iso(message.due), "sent": _iso(sent),
            "text": message.text, "link": message.link,
            "images": [{"url": message.image, "alt": message.options.get("alt")}] if message.image else [],
        }
        if message.options.get("event"):
            data["event"] = message.options["event"]
        self._post(message.key, "post.published", data, sent)
        return Published(message.key)

    def find_published(self, message: Message, since: datetime,
                       exclude: Collection[str] = frozenset()) -> Published | None:
        """A receiver cannot be asked; it drops repeats by webhook-id, so a resend is safe."""
        return None

    def check(self) -> str:
        """Send a signed ping; return the receiver and its answer."""
        status = self._post(f"ping:{uuid.uuid4()}", "oyez.ping", {}, clock.now())
        return f"{self.where} accepted a signed ping (HTTP {status})"

    def _sign(self, msg_id: str, sent: datetime, body: str) -> str:
        try:
            return signer(self._secret).sign(msg_id, sent, body)
        except ValueError as exc:  # only a dry run's unset ${VAR} gets this far
            raise PermanentError(f"{self.where}: {exc}") from None

    def _post(self, msg_id: str, kind: str, data: dict[str, Any], sent: datetime) -> int:
        body = json.dumps({"type": kind, "timestamp": _iso(sent), "data": data},
                          ensure_ascii=False, separators=(",", ":"))
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(sent.timestamp())),
            "webhook-signature": self._sign(msg_id, sent, body),  # over the exact bytes sent
        }
        resp = web.call(self.http, "POST", self.url, timeout=self.timeout, data=body.encode(),
                        headers=headers)
        if 200 <= resp.status < 300:
            return resp.status
        detail = f"{self.where}: HTTP {resp.status}"
        if resp.status == 410:
            detail += ": the receiver says it is gone; fix or remove the target"
        elif resp.status in (401, 403):
            detail += ": the receiver refused the signature; check the secret in .env"
        raise web.status_error(resp.status, detail, ambiguous=True, auth=resp.status == 403,
                               retry_after=web.wait_seconds(resp))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
