"""A fake Mastodon instance on 127.0.0.1, following the wire format in network-notes.md §3.

Bearer tokens map to accounts. POST /api/v1/statuses (JSON or form) honours
`Idempotency-Key` like the server does (per account, kept `idempotency_ttl`
seconds, a repeat returns the original status without comparing the body,
stored as soon as the status exists). Media upload answers 202 and is
"processed" after `media_polls` GETs (206 until then); posting unprocessed media
is a 422. Statuses over `max_characters` (graphemes, URLs as 23) are a 422.
Every answer carries X-RateLimit-* headers with an ISO 8601 reset.
"""

from __future__ import annotations

import html
import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from fakenet import FakeServer, Reply, Request, multipart

from adapters.text import mastodon_length

VISIBILITIES = ("public", "unlisted", "private", "direct")


@dataclass
class Status:
    """A status that exists on the fake instance."""

    id: str
    account: str
    text: str
    spoiler_text: str
    visibility: str
    media: list[dict[str, Any]]
    created_at: float = field(default_factory=time.time)


class FakeMastodon(FakeServer):
    """See the module docstring. `accounts` maps token -> username."""

    name = "fakemastodon"

    def __init__(self, accounts: dict[str, str], *, max_characters: int = 500,
                 media_polls: int = 1, idempotency_ttl: float = 3600, seed: int = 0) -> None:
        super().__init__(seed)
        self.accounts = dict(accounts)
        self.max_characters = max_characters
        self.media_polls = media_polls
        self.idempotency_ttl = idempotency_ttl
        self.statuses: list[Status] = []
        self.media: dict[str, dict[str, Any]] = {}
        self.remaining = 300
        self._keys: dict[tuple[str, str], tuple[str, float]] = {}
        self._ids = itertools.count(109_000_000_000_000_000)

    def faulty(self, request: Request) -> bool:
        return request.method == "POST" and request.path == "/api/v1/statuses"

    def texts(self) -> list[str]:
        """Every status's text, oldest first."""
        with self.lock:
            return [s.text for s in self.statuses]

    def route(self, request: Request) -> Reply:
        account = self.accounts.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        if account is None:
            return self._limited(Reply(401, {"error": "The access token is invalid"}))
        path, method = request.path, request.method
        if method == "GET" and path == "/api/v1/accounts/verify_credentials":
            reply = Reply(200, {"id": _account_id(account), "username": account, "acct": account})
        elif method == "GET" and path == "/api/v2/instance":
            reply = Reply(200, {"domain": "127.0.0.1", "configuration": {"statuses": {
                "max_characters": self.max_characters, "characters_reserved_per_url": 23,
                "max_media_attachments": 4}}})
        elif method == "POST" and path == "/api/v2/media":
            reply = self._upload(request)
        elif method == "GET" and path.startswith("/api/v1/media/"):
            reply = self._media(path.rsplit("/", 1)[1])
        elif method == "POST" and path == "/api/v1/statuses":
            reply = self._post(account, request)
        elif method == "GET" and path == f"/api/v1/accounts/{_account_id(account)}/statuses":
            with self.lock:
                mine = [s for s in reversed(self.statuses) if s.account == account]
            reply = Reply(200, [self._json(s) for s in mine[:int(request.query.get("limit", 20))]])
        elif method == "GET" and path.startswith("/api/v1/statuses/") and path.endswith("/source"):
            found = [s for s in self.statuses if s.id == path.split("/")[4]]
            reply = (Reply(200, {"id": found[0].id, "text": found[0].text,
                                 "spoiler_text": found[0].spoiler_text})
                     if found else Reply(404, {"error": "Record not found"}))
        else:
            reply = Reply(404, {"error": "Record not found"})
        return self._limited(reply)

    def _limited(self, reply: Reply) -> Reply:
        with self.lock:
            self.remaining = max(0, self.remaining - 1)
            remaining = self.remaining
        reset = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        reply.headers.update({"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": str(remaining),
                              "X-RateLimit-Reset": reset})
        return reply

    def _upload(self, request: Request) -> Reply:
        parts = multipart(request)
        if not parts.get("file"):
            return Reply(422, {"error": "Validation failed: File can't be blank"})
        media_id = str(next(self._ids))
        with self.lock:
            self.media[media_id] = {"id": media_id, "type": "image", "url": None,
                                    "description": (parts.get("description") or b"").decode() or None,
                                    "size": len(parts["file"]), "polls": 0}
        return Reply(202, self._media_json(media_id))

    def _media(self, media_id: str) -> Reply:
        with self.lock:
            media = self.media.get(media_id)
            if media is None:
                return Reply(404, {"error": "Record not found"})
            media["polls"] += 1
            if media["polls"] >= self.media_polls:
                media["url"] = f"{self.url}/system/media/{media_id}.png"
        return Reply(200 if media["url"] else 206, self._media_json(media_id))

    def _media_json(self, media_id: str) -> dict[str, Any]:
        media = self.media[media_id]
        return {k: media[k] for k in ("id", "type", "url", "description")} | {
            "preview_url": f"{self.url}/system/media/{media_id}-small.png"}

    def _post(self, account: str, request: Request) -> Reply:
        body = request.json()
        if not isinstance(body, dict):  # form-encoded
            body = dict(parse_qsl(request.body.decode()))
        key = request.headers.get("idempotency-key")
        with self.lock:
            if key is not None:
                known = self._keys.get((account, key))
                if known is not None and time.time() - known[1] < self.idempotency_ttl:
                    return Reply(200, self._json(next(s for s in self.statuses if s.id == known[0])))
            text, spoiler = str(body.get("status") or ""), str(body.get("spoiler_text") or "")
            media_ids = [str(m) for m in body.get("media_ids") or []]
            if not text and not media_ids:
                return Reply(422, {"error": "Validation failed: Text can't be blank"})
            if mastodon_length(spoiler + text) > self.max_characters:
                return Reply(422, {"error": "Validation failed: Text character limit of "
                                   f"{self.max_characters} exceeded"})
            if body.get("visibility", "public") not in VISIBILITIES:
                return Reply(422, {"error": "Validation failed: Visibility is not included in the list"})
            media = [self.media.get(m) for m in media_ids]
            if any(m is None for m in media):
                return Reply(422, {"error": "Validation failed: Media not found"})
            if any(m and m["url"] is None for m in media):
                return Reply(422, {"error": "Cannot attach files that have not finished processing. "
                                   "Try again in a moment!"})
            status = Status(str(next(self._ids)), account, text, spoiler,
                            str(body.get("visibility", "public")), [m for m in media if m])
            self.statuses.append(status)
            if key is not None:
                self._keys[(account, key)] = (status.id, time.time())
            self.lock.notify_all()
            return Reply(200, self._json(status))

    def _json(self, status: Status) -> dict[str, Any]:
        created = datetime.fromtimestamp(status.created_at, UTC).isoformat(timespec="milliseconds")
        return {"id": status.id, "created_at": created.replace("+00:00", "Z"),
                "content": f"<p>{html.escape(status.text)}</p>", "spoiler_text": status.spoiler_text,
                "visibility": status.visibility, "url": f"{self.url}/@{status.account}/{status.id}",
                "media_attachments": [self._media_json(m["id"]) for m in status.media]}


def _account_id(username: str) -> str:
    return str(100 + sum(map(ord, username)))
