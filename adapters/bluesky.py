"""Bluesky adapter: app.bsky.feed.post records written exactly once by construction.

oyez chooses each post's record key (rkey) itself, before the first attempt
(`record_key`): a TID whose timestamp is the delivery's `first_attempt_at` (set
by the ledger's claim, committed before any network call, never changed) and
whose clock id comes from a digest of the ledger key. The record's `createdAt`
is that same instant. Every attempt therefore writes the same record under the
same key, with `putRecord` and `swapRecord: null` ("only if absent"): a retry
after a post that did go through gets `InvalidSwap`, reads the record back and
reports it as published. No listing is involved.

One session per target, kept in memory: logged in once (logins are strictly
rate-limited), refreshed with the refresh token when the access token expires
or is about to, and the refused call is repeated once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from pydantic import SecretStr, field_validator

from scheduler import clock
from scheduler.secrets import redact, register

from . import http as web
from . import text as counting
from .base import AdapterSettings, AuthError, Message, PermanentError, Published

DEFAULT_SERVICE = "https://bsky.social"
POST = "app.bsky.feed.post"
MAX_GRAPHEMES = 300
MAX_BYTES = 3000
MAX_BLOB = 1_000_000  # bytes; newer servers take 2 MB, older ones 1 MB
REFRESH_BEFORE = 60.0  # seconds before the access token's expiry that it is refreshed
_S32 = "234567abcdefghijklmnopqrstuvwxyz"  # base32-sortable, as TIDs are written


class BlueskySettings(AdapterSettings):
    """jobs.yaml settings for `adapter: bluesky`."""

    handle: str
    app_password: SecretStr
    service_url: str = DEFAULT_SERVICE

    @field_validator("service_url")
    @classmethod
    def _https(cls, value: str) -> str:
        return web.check_base_url(value, "service_url")


def tid(micros: int, clock_id: int) -> str:
    """A TID: 13 base32-sortable characters of (microseconds << 10 | clock id)."""
    value = (micros << 10) | (clock_id & 1023)
    return "".join(_S32[(value >> (5 * i)) & 31] for i in reversed(range(13)))


def created_at(message: Message) -> datetime:
    """The post's `createdAt`: its first attempt (fixed in the ledger), else its due time."""
    return (message.first_attempt_at or message.due or clock.now()).astimezone(UTC)


def record_key(message: Message) -> str:
    """The delivery's rkey: `created_at` to the microsecond plus a clock id from its ledger key.

    Two deliveries would need the same first-attempt microsecond and one of
    1,024 clock ids to collide, and a collision is refused (never overwritten).
    """
    moment = created_at(message)
    micros = int(moment.timestamp()) * 1_000_000 + moment.microsecond
    return tid(micros, int.from_bytes(hashlib.sha256(message.key.encode()).digest()[:2]))


class Bluesky:
    """Posts to one Bluesky account."""

    Settings: ClassVar[type[AdapterSettings]] = BlueskySettings
    idempotent_for: ClassVar[timedelta] = timedelta(days=36500)  # the rkey never expires

    def __init__(self, settings: AdapterSettings, http: requests.Session) -> None:
        assert isinstance(settings, BlueskySettings)
        self.settings = settings
        self.base = settings.service_url
        self.where = f"bluesky @{settings.handle}"
        self.http = http
        self.timeout = web.timeout()
        self._lock = threading.Lock()  # the session is shared by the lane and the sweep
        self._session: dict[str, str] | None = None
        self._expires = 0.0  # unix time the access token expires
        self._dids: dict[str, str | None] = {}

    @staticmethod
    def text_problem(message: Message) -> str | None:
        """Over 300 graphemes or 3,000 UTF-8 bytes, Bluesky's two limits on a post's text."""
        size = len(message.text.encode())
        if len(message.text) <= MAX_GRAPHEMES and size <= MAX_BYTES:
            return None  # never more graphemes than code points: no need to count them
        count = counting.graphemes(message.text)
        if count > MAX_GRAPHEMES or size > MAX_BYTES:
            return (f"{count} graphemes ({size} bytes), Bluesky allows {MAX_GRAPHEMES} "
                    f"graphemes and {MAX_BYTES} bytes")
        return None

    def publish(self, message: Message) -> Published:
        """Write the post under its fixed rkey, only if absent; an existing equal one is the post."""
        did, rkey = self._did(), record_key(message)
        record = self._record(message)
        try:
            resp = self._xrpc("POST", "com.atproto.repo.putRecord", json_body={
                "repo": did, "collection": POST, "rkey": rkey, "record": record, "swapRecord": None})
        except PermanentError as exc:
            if "InvalidSwap" not in str(exc):
                raise
            found = self._existing(did, rkey, record)
            if found is None:
                raise PermanentError(f"{self.where}: record key {rkey} already holds another "
                                     "post; not overwritten") from None
            return found
        return self._published(did, rkey, resp)

    def find_published(self, message: Message, since: datetime,
                       exclude: Collection[str] = frozenset()) -> Published | None:
        """Read the record at the delivery's rkey (no listing): the post if it is there."""
        return self._existing(self._did(), record_key(message), self._text_record(message))

    def check(self) -> str:
        """Log in (or reuse the session) and return the account's handle and DID."""
        did = self._did()
        with self._lock:
            handle = (self._session or {}).get("handle", self.settings.handle)
        return f"@{handle} ({did})"

    # -- the record ------------------------------------------------------------

    def _text_record(self, message: Message) -> dict[str, Any]:
        stamp = created_at(message).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"$type": POST, "text": message.text, "createdAt": stamp}

    def _record(self, message: Message) -> dict[str, Any]:
        record = self._text_record(message)
        facets = self._facets(message.text)
        if facets:
            record["facets"] = facets
        alt = str(message.options.get("alt") or "")
        if message.link:
            event = message.options.get("event") or {}
            external: dict[str, Any] = {"uri": message.link,
                                        "title": event.get("title") or urlsplit(message.link).hostname
                                        or message.link,
                                        "description": ""}
            if message.image:
                external["thumb"] = self._upload(message.image)
            record["embed"] = {"$type": "app.bsky.embed.external", "external": external}
        elif message.image:
            record["embed"] = {"$type": "app.bsky.embed.images",
                               "images": [{"image": self._upload(message.image), "alt": alt}]}
        return record

    def _facets(self, text: str) -> list[dict[str, Any]]:
        """Links and resolvable @handles, located by UTF-8 byte offsets."""
        facets = []
        links = list(counting.URL.finditer(text))
        for match in links:
            start, end = counting.utf8_span(text, *match.span())
            facets.append({"index": {"byteStart": start, "byteEnd": end},
                           "features": [{"$type": "app.bsky.richtext.facet#link", "uri": match.group()}]})
        for match in counting.HANDLE.finditer(text):
            if any(link.start() <= match.start() < link.end() for link in links):
                continue  # part of a URL, which is already a link
            did = self._resolve(match.group(1))
            if did is not None:  # an unknown handle stays plain text
                start, end = counting.utf8_span(text, *match.span())
                facets.append({"index": {"byteStart": start, "byteEnd": end},
                               "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did}]})
        return sorted(facets, key=lambda f: f["index"]["byteStart"])

    def _resolve(self, handle: str) -> str | None:
        if handle not in self._dids:
            try:
                resp = self._xrpc("GET", "com.atproto.identity.resolveHandle", params={"handle": handle})
                self._dids[handle] = str(resp.body["did"])
            except PermanentError:
                self._dids[handle] = None
        return self._dids[handle]

    def _upload(self, image: str) -> Any:
        data, kind = web.download(self.http, image, timeout=self.timeout)
        if len(data) > MAX_BLOB:
            raise PermanentError(f"{self.where}: image {redact(image)} is {len(data)} bytes, "
                                 f"over Bluesky's {MAX_BLOB}")
        return self._xrpc("POST", "com.atproto.repo.uploadBlob", data=data,
                          headers={"Content-Type": kind}).body["blob"]

    def _existing(self, did: str, rkey: str, record: dict[str, Any]) -> Published | None:
        try:
            resp = self._xrpc("GET", "com.atproto.repo.getRecord",
                              params={"repo": did, "collection": POST, "rkey": rkey})
        except PermanentError as exc:
            if "RecordNotFound" in str(exc) or "Could not locate record" in str(exc):
                return None
            raise
        value = resp.body.get("value") or {}
        if any(value.get(k) != record[k] for k in ("text", "createdAt")):
            return None
        return self._published(did, rkey, resp)

    def _published(self, did: str, rkey: str, resp: web.Response) -> Published:
        uri = str(resp.body.get("uri") or f"at://{did}/{POST}/{rkey}")
        return Published(uri, f"https://bsky.app/profile/{did}/post/{rkey}", None)

    # -- session and calls -----------------------------------------------------

    def _did(self) -> str:
        with self._lock:
            self._fresh_session()
            assert self._session is not None
            return self._session["did"]

    def _fresh_session(self) -> str:
        """The access token, logging in or refreshing first if needed (holding the lock)."""
        if self._session is None:
            self._start(self._post_session("createSession", None, {
                "identifier": self.settings.handle,
                "password": self.settings.app_password.get_secret_value()}))
        elif time.time() > self._expires - REFRESH_BEFORE:
            self._refresh()
        assert self._session is not None
        return self._session["accessJwt"]

    def _refresh(self) -> None:
        assert self._session is not None
        try:
            self._start(self._post_session("refreshSession", self._session["refreshJwt"], None))
        except AuthError:  # the refresh token is spent too: log in again, once
            self._session = None
            self._fresh_session()

    def _post_session(self, what: str, bearer: str | None, body: dict[str, str] | None) -> Any:
        auth = web.BearerAuth(SecretStr(bearer)) if bearer else None
        resp = web.call(self.http, "POST", f"{self.base}/xrpc/com.atproto.server.{what}",
                        timeout=self.timeout, json_body=body, auth=auth)
        if resp.status == 200 and isinstance(resp.body, dict) and resp.body.get("accessJwt"):
            return resp.body
        raise self._error(resp, ambiguous=False, session=True)

    def _start(self, session: dict[str, Any]) -> None:
        for name in ("accessJwt", "refreshJwt"):
            register(str(session[name]))  # tokens are secrets: masked wherever they might appear
        self._session = {k: str(session.get(k, "")) for k in ("accessJwt", "refreshJwt", "did", "handle")}
        self._expires = _jwt_expiry(self._session["accessJwt"])

    def _xrpc(self, method: str, nsid: str, **kw: Any) -> web.Response:
        """One XRPC call with the session's token; an expired token is refreshed and the call
        repeated once."""
        for attempt in (1, 2):
            with self._lock:
                token = self._fresh_session()
            resp = web.call(self.http, method, f"{self.base}/xrpc/{nsid}", timeout=self.timeout,
                            auth=web.BearerAuth(SecretStr(token)), **kw)
            if resp.status == 200 and isinstance(resp.body, dict):
                return resp
            if attempt == 1 and _error_name(resp) == "ExpiredToken":
                with self._lock:
                    if self._session is not None and self._session["accessJwt"] == token:
                        self._refresh()
                continue
            raise self._error(resp, ambiguous=method == "POST")
        raise AssertionError("unreachable")

    def _error(self, resp: web.Response, *, ambiguous: bool, session: bool = False) -> Exception:
        name = _error_name(resp)
        text = resp.body.get("message") if isinstance(resp.body, dict) else None
        detail = f"{self.where}: HTTP {resp.status} {name or ''}: {redact(str(text or 'no message'))[:500]}"
        auth = name in ("ExpiredToken", "InvalidToken", "AuthenticationRequired", "AuthMissing",
                        "AccountTakedown", "AuthFactorTokenRequired")
        if auth or (session and resp.status == 401):
            detail += ". Fix: create a new app password (Settings > App passwords) and update .env"
        return web.status_error(resp.status, detail, ambiguous=ambiguous, auth=auth,
                                retry_after=web.wait_seconds(resp, reset_header="RateLimit-Reset"))


def _error_name(resp: web.Response) -> str | None:
    return str(resp.body.get("error")) if isinstance(resp.body, dict) and resp.body.get("error") else None


def _jwt_expiry(token: str) -> float:
    """The `exp` claim of a JWT (not verified: the server does that); unreadable means "no
    known expiry", and the server's ExpiredToken answer triggers the refresh instead."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return float("inf")
