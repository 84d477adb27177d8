"""Facebook Page adapter: posts through the Graph API's /{page-id}/feed and /photos.

The Page token travels in an `Authorization: Bearer` header, never in a URL.
Graph error bodies become TransientError, PermanentError or AuthError by code,
following Meta's documented error codes (see the README's Graph notes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests
from pydantic import SecretStr, field_validator

from scheduler import secrets
from scheduler.secrets import redact

from . import http as web
from .base import (
    AdapterSettings,
    AuthError,
    Message,
    PermanentError,
    Published,
    TokenStatus,
    TransientError,
)
from .http import check_base_url

log = logging.getLogger(__name__)

DEFAULT_GRAPH_URL = "https://graph.facebook.com"
DEFAULT_VERSION = "v25.0"
RATE_LIMIT_CODES = frozenset({4, 17, 32, 341, 613, 80001})
AUTH_CODES = frozenset({102, 190})
PAGE_SIZE = 100  # posts per page when looking for one (the Graph API's maximum)
MAX_PAGES = 20  # the most pages read looking for one post: 2,000 posts since its first attempt
REQUIRED_SCOPES = ("pages_manage_posts",)
MAX_WAIT = 86400.0  # the longest wait a server may ask for; beyond it a post's grace is long gone


class FacebookPageSettings(AdapterSettings):
    """jobs.yaml settings for `adapter: facebook_page`."""

    page_id: str
    access_token: SecretStr
    graph_url: str | None = None

    @field_validator("graph_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        return None if value is None else check_base_url(value, "graph_url")


class FacebookPage:
    """Publishes to one Facebook Page."""

    Settings: ClassVar[type[AdapterSettings]] = FacebookPageSettings
    max_chars: ClassVar[int | None] = 63_206  # a Page post's message limit

    def __init__(self, settings: AdapterSettings, http: requests.Session) -> None:
        assert isinstance(settings, FacebookPageSettings)
        base = settings.graph_url or check_base_url(os.environ.get("FB_GRAPH_URL") or DEFAULT_GRAPH_URL)
        version = os.environ.get("FB_GRAPH_VERSION") or DEFAULT_VERSION
        self.page_id = settings.page_id
        self.base = f"{base}/{version}"
        self.http = http
        self.timeout = float(os.environ.get("OYEZ_HTTP_TIMEOUT") or 20)
        self._token = settings.access_token
        self._auth = web.BearerAuth(settings.access_token)

    def publish(self, message: Message) -> Published:
        """Create a feed post (or a photo post when the message has an image)."""
        if message.image:
            fields = {"url": message.image, "message": message.text}
            resp = self._call("POST", f"/{self.page_id}/photos", data=fields)
            remote_id = str(resp.body.get("post_id") or resp.body.get("id", ""))
        else:
            fields = {"message": message.text}
            if message.link:
                fields["link"] = message.link
            resp = self._call("POST", f"/{self.page_id}/feed", data=fields)
            remote_id = str(resp.body.get("id", ""))
        if not remote_id:
            raise TransientError(f"page {self.page_id}: success without a post id", ambiguous=True)
        return Published(remote_id, self.permalink(remote_id), usage_percent(resp))

    @staticmethod
    def permalink(remote_id: str) -> str:
        """The post's address on Facebook (a page post id is `PAGEID_POSTID`)."""
        return f"https://www.facebook.com/{remote_id}"

    def find_published(self, message: Message, since: datetime,
                       exclude: Collection[str] = frozenset()) -> Published | None:
        """Page back through the page's posts to `since`; the earliest with this text wins."""
        wanted, found = message.text.strip(), None
        params = {"fields": "id,message,created_time", "limit": str(PAGE_SIZE),
                  "since": str(int(since.timestamp()))}
        for _ in range(MAX_PAGES):
            resp = self._call("GET", f"/{self.page_id}/published_posts", params=params)
            posts = resp.body.get("data")
            for post in posts if isinstance(posts, list) else []:  # newest first
                if (isinstance(post, dict) and str(post.get("message", "")).strip() == wanted
                        and str(post.get("id")) not in exclude and _created(post) >= since):
                    remote_id = str(post.get("id"))
                    found = Published(remote_id, self.permalink(remote_id), usage_percent(resp))
            after = _next_cursor(resp.body)
            if not posts or after is None:
                return found
            params = {**params, "after": after}
        log.warning("page %s: stopped looking for a post after %d pages of %d", self.page_id,
                    MAX_PAGES, PAGE_SIZE)
        return found

    def check(self) -> str:
        """Return the page's name as the token sees it."""
        resp = self._call("GET", "/me", params={"fields": "id,name"})
        if str(resp.body.get("id")) != self.page_id:
            raise AuthError(f"page {self.page_id}: the access token belongs to "
                            f"{redact(str(resp.body.get('id')))[:40]}, not to this page")
        return str(resp.body.get("name", self.page_id))

    def token_status(self) -> TokenStatus:
        """Ask Graph's debug_token about the Page token: validity, expiry, scopes.

        Asks with the app token `FB_APP_ID|FB_APP_SECRET` when both are set, else
        with the Page token itself. The token to inspect goes in the query string,
        as debug_token requires; it is a registered secret, so it is masked in any
        message.
        """
        app_id, app_secret = os.environ.get("FB_APP_ID"), os.environ.get("FB_APP_SECRET")
        auth = self._auth
        if app_id and app_secret:
            secrets.register(app_secret)
            auth = web.BearerAuth(SecretStr(f"{app_id}|{app_secret}"))
        resp = web.call(self.http, "GET", f"{self.base}/debug_token", timeout=self.timeout,
                        params={"input_token": self._token.get_secret_value()}, auth=auth)
        data = resp.body.get("data") if isinstance(resp.body, dict) else None
        if resp.status >= 400 or not isinstance(data, dict):
            raise graph_error(resp, f"page {self.page_id} debug_token", ambiguous=False)
        if data.get("is_valid") is not True:
            error = data.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            reason = redact(str(message or "the token is not valid"))[:300]
            return TokenStatus(False, problem=reason)
        expires = data.get("expires_at")
        when = (datetime.fromtimestamp(expires, UTC)
                if isinstance(expires, int) and 0 < expires < 2**40 else None)
        scopes = data.get("scopes")
        scopes = scopes if isinstance(scopes, list) else []
        return TokenStatus(True, when, tuple(s for s in REQUIRED_SCOPES if s not in scopes))

    def _call(self, method: str, path: str, *, data: dict[str, str] | None = None,
              params: dict[str, str] | None = None) -> web.Response:
        resp = web.call(self.http, method, self.base + path, timeout=self.timeout,
                        data=data, params=params, auth=self._auth)
        if resp.status < 400 and isinstance(resp.body, dict) and "error" not in resp.body:
            return resp
        raise graph_error(resp, f"page {self.page_id}", ambiguous=method != "GET")


def graph_error(resp: web.Response, where: str, *, ambiguous: bool) -> Exception:
    """Map a Graph API error response to the error tree."""
    error: dict[str, Any] = {}
    if isinstance(resp.body, dict) and isinstance(resp.body.get("error"), dict):
        error = resp.body["error"]
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode")
    text = redact(str(error.get("message") or "no error message"))[:500]
    detail = f"{where}: HTTP {resp.status}"
    if code is not None:
        detail += f", Graph error {code}" + (f"/{subcode}" if subcode else "")
    detail += f": {text}"
    if error.get("fbtrace_id"):
        detail += f" (fbtrace_id {redact(str(error['fbtrace_id']))[:64]})"
    if code in AUTH_CODES:
        detail += ". Fix: issue a new Page access token and update it in .env"
        return AuthError(detail, code=code, status=resp.status)
    if code in RATE_LIMIT_CODES:
        return TransientError(detail, code=code, status=resp.status, retry_after=retry_after(resp))
    if code in (1, 2) or error.get("is_transient") is True or resp.status >= 500 or not error:
        return TransientError(detail, code=code, status=resp.status, retry_after=retry_after(resp),
                              ambiguous=ambiguous and (resp.status >= 500 or code in (1, 2) or not error))
    return PermanentError(detail, code=code, status=resp.status)


def _created(post: dict[str, Any]) -> datetime:
    """A listed post's created_time (e.g. 2026-11-25T12:00:00+0000); the epoch if missing."""
    try:
        return datetime.strptime(str(post.get("created_time")), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return datetime.fromtimestamp(0, UTC)


def _next_cursor(body: Any) -> str | None:
    """The `after` cursor of a listing, if the listing says there is a next page."""
    paging = body.get("paging") if isinstance(body, dict) else None
    if not isinstance(paging, dict) or not paging.get("next"):
        return None
    cursors = paging.get("cursors")
    after = cursors.get("after") if isinstance(cursors, dict) else None
    return after if isinstance(after, str) and after else None


def usage_percent(resp: web.Response) -> float | None:
    """The highest usage percentage in X-App-Usage, X-Page-Usage, X-Business-Use-Case-Usage."""
    values: list[float] = []
    for name in ("X-App-Usage", "X-Page-Usage"):
        values.extend(_numbers(resp.header_json(name)))
    for entry in _buc_entries(resp):
        values.extend(_numbers(entry))
    return max(values) if values else None


def retry_after(resp: web.Response) -> float | None:
    """Seconds the network asks us to wait: Retry-After or the regain time, if any."""
    waits: list[float] = []
    header = resp.headers.get("Retry-After", "").strip()
    if header.isdigit() and len(header) < 10:
        waits.append(float(header))
    for entry in _buc_entries(resp):
        minutes = entry.get("estimated_time_to_regain_access")
        if isinstance(minutes, int | float) and 0 < minutes < MAX_WAIT:
            waits.append(float(minutes) * 60)
    return min(max(waits), MAX_WAIT) if waits else None


def _buc_entries(resp: web.Response) -> list[dict[str, Any]]:
    usage = resp.header_json("X-Business-Use-Case-Usage")
    if not isinstance(usage, dict):
        return []
    return [e for entries in usage.values() if isinstance(entries, list)
            for e in entries if isinstance(e, dict)]


def _numbers(usage: Any) -> list[float]:
    if not isinstance(usage, dict):
        return []
    return [float(usage[k]) for k in ("call_count", "total_time", "total_cputime")
            if isinstance(usage.get(k), int | float)]
