"""Mastodon adapter: statuses through POST /api/v1/statuses, made safe to retry.

Every status carries an `Idempotency-Key` derived from the ledger key
(`idempotency_key`): the server keeps it for an hour per account and answers a
repeat with the original status, so within that window a retry after an
ambiguous failure cannot make a second post and needs no listing
(`idempotent_for`). Past it, `find_published` compares the account's recent
statuses by their plain source text.

Images are uploaded through /api/v2/media first (with the post's `alt:` as
description), waiting a bounded time while the server still processes them;
a retry uploads again (the server drops media never attached to a status).
Errors follow the HTTP status (see `web.status_error`); 429 waits until
`X-RateLimit-Reset`, an ISO 8601 instant.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from pydantic import SecretStr, field_validator

from scheduler.secrets import redact

from . import http as web
from . import text as counting
from .base import AdapterSettings, Message, Published, PublishError, TransientError

DEFAULT_LIMIT = 500  # characters; an instance may allow more (`oyez check` reports its limit)
URL_COST = 23
MEDIA_WAIT = 30.0  # seconds to wait for an uploaded image to be processed
LIST_LIMIT = 40  # the most statuses one listing returns


class MastodonSettings(AdapterSettings):
    """jobs.yaml settings for `adapter: mastodon`."""

    instance_url: str
    access_token: SecretStr

    @field_validator("instance_url")
    @classmethod
    def _https(cls, value: str) -> str:
        return web.check_base_url(value, "instance_url")


def idempotency_key(ledger_key: str) -> str:
    """The Idempotency-Key for a delivery: a digest of its ledger key.

    Hashed so that any ledger key (any length, any characters) becomes a short
    ASCII header value; the same delivery always gets the same key.
    """
    return "oyez-" + hashlib.sha256(ledger_key.encode()).hexdigest()[:40]


def status_text(message: Message) -> str:
    """The status as posted: the text, and the link on its own line unless the text has it."""
    if message.link and message.link not in message.text:
        return f"{message.text}\n\n{message.link}"
    return message.text


class Mastodon:
    """Posts statuses to one Mastodon account."""

    Settings: ClassVar[type[AdapterSettings]] = MastodonSettings
    # the server keeps an Idempotency-Key 3600 s; ten minutes spare for clock skew and slow calls
    idempotent_for: ClassVar[timedelta] = timedelta(minutes=50)

    def __init__(self, settings: AdapterSettings, http: requests.Session) -> None:
        assert isinstance(settings, MastodonSettings)
        self.base = settings.instance_url
        self.where = f"mastodon {urlsplit(self.base).hostname}"
        self.http = http
        self.timeout = web.timeout()
        self._auth = web.BearerAuth(settings.access_token)
        self._account_id: str | None = None

    @staticmethod
    def text_problem(message: Message) -> str | None:
        """Over 500 as Mastodon counts: graphemes of content warning + status, URLs as 23."""
        spoiler = str(message.options.get("spoiler_text") or "")
        counted = counting.mastodon_text(spoiler + status_text(message), URL_COST)
        if len(counted) <= DEFAULT_LIMIT:
            return None  # never more graphemes than code points: no need to count them
        length = counting.graphemes(counted)
        if length > DEFAULT_LIMIT:
            return (f"{length} characters, Mastodon allows {DEFAULT_LIMIT} "
                    f"(graphemes of spoiler_text and text, each URL counts {URL_COST})")
        return None

    def publish(self, message: Message) -> Published:
        """Upload the image (if any), then post the status under the delivery's Idempotency-Key."""
        body: dict[str, Any] = {"status": status_text(message),
                                "visibility": message.options.get("visibility") or "public"}
        if message.options.get("spoiler_text"):
            body["spoiler_text"] = message.options["spoiler_text"]
        if message.image:
            body["media_ids"] = [self._upload(message.image, message.options.get("alt"))]
        headers = {"Idempotency-Key": idempotency_key(message.key)} if message.key else None
        resp = self._call("POST", "/api/v1/statuses", json_body=body, headers=headers)
        status_id = str(resp.body.get("id") or "")
        if not status_id:
            raise TransientError(f"{self.where}: success without a status id", ambiguous=True)
        return Published(status_id, resp.body.get("url"), usage(resp))

    def find_published(self, message: Message, since: datetime,
                       exclude: Collection[str] = frozenset()) -> Published | None:
        """The earliest of the account's latest statuses whose source text is this one."""
        wanted = status_text(message).strip()
        listing = self._call("GET", f"/api/v1/accounts/{self._account()}/statuses",
                             params={"limit": str(LIST_LIMIT), "exclude_reblogs": "true"})
        for status in reversed(listing.body) if isinstance(listing.body, list) else []:  # oldest first
            if not isinstance(status, dict) or not _at_or_after(status.get("created_at"), since) \
                    or str(status.get("id")) in exclude:
                continue
            source = self._call("GET", f"/api/v1/statuses/{status.get('id')}/source")
            if str(source.body.get("text", "")).strip() == wanted:
                return Published(str(status["id"]), status.get("url"), usage(source))
        return None

    def check(self) -> str:
        """Return the account (`@user@host`) and the instance's character limit."""
        account = self._call("GET", "/api/v1/accounts/verify_credentials").body
        self._account_id = str(account.get("id"))
        limit = DEFAULT_LIMIT
        try:
            config = self._call("GET", "/api/v2/instance").body.get("configuration", {})
            limit = int(config.get("statuses", {}).get("max_characters", DEFAULT_LIMIT))
        except (PublishError, AttributeError, TypeError, ValueError):
            pass  # the account is what check is about; the limit is a courtesy
        host = urlsplit(self.base).hostname
        return f"@{account.get('username')}@{host} (statuses up to {limit} characters)"

    def _account(self) -> str:
        if self._account_id is None:
            self._account_id = str(self._call("GET", "/api/v1/accounts/verify_credentials").body["id"])
        return self._account_id

    def _upload(self, image: str, alt: Any) -> str:
        data, kind = web.download(self.http, image, timeout=self.timeout)
        name = os.path.basename(urlsplit(image).path) or "image"
        resp = self._call("POST", "/api/v2/media", data={"description": str(alt)} if alt else None,
                          files={"file": (name, data, kind)})
        media_id = str(resp.body.get("id"))
        deadline, pause = time.monotonic() + MEDIA_WAIT, 0.25
        while resp.status in (202, 206) or resp.body.get("url") is None:  # still being processed
            if time.monotonic() + pause > deadline:
                raise TransientError(f"{self.where}: image {media_id} still processing "
                                     f"after {MEDIA_WAIT:g}s")
            time.sleep(pause)
            pause = min(pause * 2, 4.0)
            resp = self._call("GET", f"/api/v1/media/{media_id}")
        return media_id

    def _call(self, method: str, path: str, **kw: Any) -> web.Response:
        resp = web.call(self.http, method, self.base + path, timeout=self.timeout, auth=self._auth, **kw)
        if resp.status < 300 and isinstance(resp.body, dict | list):
            return resp  # 202 and 206 mean "media still processing": see _upload
        error = str(resp.body.get("error")) if isinstance(resp.body, dict) else "no error message"
        detail = f"{self.where}: HTTP {resp.status}: {redact(error)[:500]}"
        if resp.status in (401, 403):
            detail += ". Fix: create a new access token (write:statuses, write:media) and update .env"
        # an image not processed yet is worth waiting for; other validation errors are final
        not_ready = resp.status == 422 and ("not_ready" in error or "finished processing" in error)
        raise web.status_error(503 if not_ready else resp.status, detail,
                               ambiguous=method != "GET" and not not_ready,
                               retry_after=web.wait_seconds(resp, reset_header="X-RateLimit-Reset"),
                               auth=resp.status == 403)


def usage(resp: web.Response) -> float | None:
    """Percent of the rate limit used, from X-RateLimit-Limit and -Remaining."""
    try:
        limit = float(resp.headers["X-RateLimit-Limit"])
        remaining = float(resp.headers["X-RateLimit-Remaining"])
    except (KeyError, ValueError):
        return None
    return max(0.0, min(100.0, 100.0 * (1 - remaining / limit))) if limit > 0 else None


def _at_or_after(stamp: Any, since: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(stamp)) >= since
    except (ValueError, TypeError):
        return False
