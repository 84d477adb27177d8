"""What Facebook, Instagram and Threads share: Meta's Graph API conventions.

One error body (`{"error": {"message", "code", "error_subcode", "is_transient",
"fbtrace_id"}}`) mapped to the error tree by code, the usage headers, the
retry-after hints, base-URL checks, listing pages back to a time, and the
two-step container flow (create, wait until FINISHED, publish) of Instagram
and Threads. Each network's module holds only what differs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests
from pydantic import SecretStr, field_validator

from scheduler.secrets import redact

from . import http as web
from .base import AdapterSettings, AuthError, Message, PermanentError, Published, TransientError

log = logging.getLogger(__name__)

# code 9 is Instagram's "reached max posts allowed by the Content Publishing API" (subcode 2207042)
RATE_LIMIT_CODES = frozenset({4, 9, 17, 32, 341, 613, 80001})
AUTH_CODES = frozenset({102, 190})
# Instagram: -1 server error / create media failed, -2 timeout downloading media or expired
# container; 9007 "media not ready for publishing" (the container is polled again next time)
TRANSIENT_CODES = frozenset({-2, -1, 1, 2, 9007})
# Instagram and Threads: the account is restricted (2207051 comes with the rate-limit code 4,
# yet waiting does not help), the user is restricted (4279013): a human must look
PERMANENT_SUBCODES = frozenset({2207051, 4279013})
QUOTA_WAIT = 3600.0  # a publishing quota rolls over 24 hours: look again in an hour
QUOTA_FRESH = 600.0  # seconds a quota reading is trusted (counting our own posts meanwhile)
PAGE_SIZE = 100  # items per page when looking for one (the Graph API's maximum)
MAX_PAGES = 20  # the most pages read looking for one post: 2,000 posts since its first attempt
MAX_WAIT = web.MAX_WAIT  # the longest wait a server may ask for


def check_base_url(url: str) -> str:
    """A Graph base URL (`graph_url`): https, or http for loopback test servers; ValueError else."""
    return web.check_base_url(url, "graph_url")


class GraphSettings(AdapterSettings):
    """Settings every Graph-family target has: a token and an optional base URL (for fakes)."""

    access_token: SecretStr
    graph_url: str | None = None

    @field_validator("graph_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        return None if value is None else check_base_url(value)


class GraphClient:
    """An account on a Graph-style API: base URL and version, bearer token, typed errors.

    Subclasses set their `Settings`, `ACCOUNT` (the settings field holding the
    account's id, and the word errors name it by), the defaults and the
    environment variables that override them (`URL_ENV`, `VERSION_ENV`).
    """

    Settings: ClassVar[type[AdapterSettings]]
    ACCOUNT: ClassVar[tuple[str, str]]

    DEFAULT_URL: ClassVar[str] = "https://graph.facebook.com"
    DEFAULT_VERSION: ClassVar[str] = "v25.0"
    URL_ENV: ClassVar[str] = "FB_GRAPH_URL"
    VERSION_ENV: ClassVar[str] = "FB_GRAPH_VERSION"
    TOKEN: ClassVar[str] = "access token"  # what the fix for a refused token asks for

    def __init__(self, settings: AdapterSettings, http: requests.Session) -> None:
        assert isinstance(settings, GraphSettings) and isinstance(settings, self.Settings)
        field, label = self.ACCOUNT
        self.account = str(getattr(settings, field))
        self.who = f"{label} {self.account}"
        base = settings.graph_url or check_base_url(os.environ.get(self.URL_ENV) or self.DEFAULT_URL)
        version = os.environ.get(self.VERSION_ENV) or self.DEFAULT_VERSION
        self.base = f"{base}/{version}"
        self.http = http
        self.timeout = web.timeout()
        self._token = settings.access_token
        self._auth = web.BearerAuth(settings.access_token)

    def call(self, method: str, path: str, *, data: dict[str, str] | None = None,
             params: dict[str, str] | None = None) -> web.Response:
        """One Graph call; a Graph error body raises the matching error (see `graph_error`)."""
        resp = web.call(self.http, method, self.base + path, timeout=self.timeout,
                        data=data, params=params, auth=self._auth)
        if resp.status < 400 and isinstance(resp.body, dict) and "error" not in resp.body:
            return resp
        raise graph_error(resp, self.who, ambiguous=method != "GET", token=self.TOKEN)

    def created_once(self, message: Message, step: str, path: str,
                     items: list[dict[str, str]]) -> list[str]:
        """POST `path` once for each of `items` (unpublished photos, carousel items), keeping
        each id in the message's steps as `{step}-{i}`; ids an earlier attempt kept are reused."""
        ids = []
        for i, data in enumerate(items):
            ident = message.steps.get(f"{step}-{i}")
            if ident is None:
                ident = str(self.call("POST", path, data=data).body.get("id") or "")
                if not ident:  # nothing visible was created: an ordinary retry is safe
                    raise TransientError(f"{self.who}: {step} {i + 1} created without an id")
                message.steps.put(f"{step}-{i}", ident)
            ids.append(ident)
        return ids

    def listing(self, path: str, params: dict[str, str]) -> Iterator[tuple[dict[str, Any], web.Response]]:
        """Every item of a paged listing (newest first), with the response that carried it."""
        for _ in range(MAX_PAGES):
            resp = self.call("GET", path, params=params)
            items = resp.body.get("data")
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict):
                    yield item, resp
            after = _next_cursor(resp.body)
            if not items or after is None:
                return
            params = {**params, "after": after}
        log.warning("%s: stopped looking for a post after %d pages of %d", self.who,
                    MAX_PAGES, PAGE_SIZE)

    def find_in(self, path: str, fields: tuple[str, str, str], message: Message, since: datetime,
                exclude: Collection[str], extra: dict[str, str] | None = None) -> Published | None:
        """The earliest item of listing `path` whose text is the message's, created at or after
        `since` and not in `exclude`. `fields` names (text, creation time, permalink)."""
        text, created, link = fields
        wanted, found = message.text.strip(), None
        params = {"fields": f"id,{text},{created},{link}", "limit": str(PAGE_SIZE),
                  "since": str(int(since.timestamp())), **(extra or {})}
        for item, resp in self.listing(path, params):  # newest first: the last match is the earliest
            if (str(item.get(text, "")).strip() == wanted and str(item.get("id")) not in exclude
                    and graph_time(item.get(created)) >= since):
                url = item.get(link)
                found = Published(str(item.get("id")), url if isinstance(url, str) else None,
                                  usage_percent(resp))
        return found


def graph_error(resp: web.Response, where: str, *, ambiguous: bool,
                token: str = "access token") -> Exception:
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
    if error.get("error_user_msg"):
        detail += f" ({redact(str(error['error_user_msg']))[:300]})"
    if error.get("fbtrace_id"):
        detail += f" (fbtrace_id {redact(str(error['fbtrace_id']))[:64]})"
    if code in AUTH_CODES:
        detail += f". Fix: issue a new {token} and update it in .env"
        return AuthError(detail, code=code, status=resp.status)
    if subcode in PERMANENT_SUBCODES:
        return PermanentError(detail, code=code, status=resp.status)
    if code in RATE_LIMIT_CODES:
        wait = retry_after(resp) or (QUOTA_WAIT if code == 9 else None)
        return TransientError(detail, code=code, status=resp.status, retry_after=wait)
    if code in TRANSIENT_CODES or error.get("is_transient") is True or resp.status >= 500 or not error:
        return TransientError(detail, code=code, status=resp.status, retry_after=retry_after(resp),
                              ambiguous=ambiguous and (resp.status >= 500 or code in (1, 2) or not error))
    return PermanentError(detail, code=code, status=resp.status)


def graph_time(value: Any) -> datetime:
    """A listed item's time (e.g. 2026-11-25T12:00:00+0000); the epoch if missing."""
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S%z")
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


@dataclass(frozen=True)
class ContainerApi:
    """Where one network's two-step publishing differs (Instagram and Threads)."""

    create: str  # edge of the user that creates a container: "media" or "threads"
    publish: str  # edge that publishes one: "media_publish" or "threads_publish"
    status_field: str  # "status_code" on Instagram, "status" on Threads
    detail_field: str  # the field that says why a container is in ERROR ("status", "error_message")
    limit: str  # edge of the user with the publishing quota
    quota: int  # posts a rolling 24 hours, if the quota reading does not say


class ContainerPublisher(GraphClient):
    """Create a container, wait until FINISHED (bounded), publish it.

    Before a burst the publishing quota is read (then counted), and a post that
    would exceed it waits (retry after). The container id is recorded in the
    message's `steps` as soon as it exists,
    so a later attempt (after a crash or a timeout) publishes that container
    instead of creating a second one; a container already PUBLISHED is looked
    up in the account's recent posts rather than published again.
    """

    API: ClassVar[ContainerApi]
    LISTING_FIELDS: ClassVar[tuple[str, str, str]]

    def __init__(self, settings: AdapterSettings, http: requests.Session) -> None:
        super().__init__(settings, http)
        self._quota: tuple[float, int, int] | None = None  # (read at, used, total)

    def poll_limits(self) -> tuple[float, float]:
        """(seconds between status reads, most seconds to wait for FINISHED)."""
        return (float(os.environ.get("OYEZ_CONTAINER_POLL_SECONDS") or 3),
                float(os.environ.get("OYEZ_CONTAINER_WAIT_SECONDS") or 120))

    def containers(self, message: Message) -> dict[str, str]:
        """The fields of the container(s) to create for `message` (children made by the subclass)."""
        raise NotImplementedError

    def publish(self, message: Message) -> Published:
        """Publish `message` through a container, reusing one an earlier attempt made."""
        container = message.steps.get("container")
        status = self._status(container) if container else "EXPIRED"
        if container is None or status == "EXPIRED":  # a container lives 24 hours
            if not message.reply_to:  # replies have a quota of their own, four times larger
                self._respect_quota()
            fields = self.containers(message)
            container = self._id(self.call("POST", f"/{self.account}/{self.API.create}", data=fields),
                                 "container")
            message.steps.put("container", container)
            status = self._status(container)
        if status == "PUBLISHED":  # the publish call went through but its answer was lost:
            # the caller looks in the account's recent posts (find_published) before anything else
            raise TransientError(f"{self.who}: container {container} is already published",
                                 ambiguous=True)
        self._wait(container, status)
        resp = self.call("POST", f"/{self.account}/{self.API.publish}", data={"creation_id": container})
        media = self._id(resp, "post")
        return Published(media, self.permalink(media), usage_percent(resp))

    def _respect_quota(self) -> None:
        """Read the publishing quota before a burst; refuse (retry after) when it is used up."""
        now = time.monotonic()
        if self._quota is None or now - self._quota[0] > QUOTA_FRESH:
            resp = self.call("GET", f"/{self.account}/{self.API.limit}",
                             params={"fields": "quota_usage,config"})
            data = resp.body.get("data")
            entry = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
            config = entry.get("config")
            config = config if isinstance(config, dict) else {}
            used, total = entry.get("quota_usage"), config.get("quota_total")
            self._quota = (now, used if isinstance(used, int) else 0,
                           total if isinstance(total, int) else self.API.quota)
        read_at, used, total = self._quota
        if used >= total:
            raise TransientError(f"{self.who}: publishing quota used up ({used} of {total} posts "
                                 "in 24 hours)", retry_after=QUOTA_FRESH)
        self._quota = (read_at, used + 1, total)  # our own post counts until the next reading

    def permalink(self, media_id: str) -> str | None:
        """The post's permalink (not derivable from its id); None if it cannot be read now."""
        try:
            link = self.call("GET", f"/{media_id}", params={"fields": "permalink"}).body.get("permalink")
        except (TransientError, PermanentError) as exc:  # cosmetic: never re-publish over it
            log.warning("%s: post %s published, permalink not read: %s", self.who, media_id, exc)
            return None
        return link if isinstance(link, str) else None

    def find_published(self, message: Message, since: datetime,
                       exclude: Collection[str] = frozenset()) -> Published | None:
        """Page back through the account's posts to `since`; the earliest with this text wins."""
        return self.find_in(f"/{self.account}/{self.API.create}", self.LISTING_FIELDS, message,
                            since, exclude)

    def _status(self, container: str) -> str:
        """The container's status; an ERROR is permanent (with the network's reason)."""
        fields = f"{self.API.status_field},{self.API.detail_field}"
        body = self.call("GET", f"/{container}", params={"fields": fields}).body
        status = str(body.get(self.API.status_field) or "IN_PROGRESS").split(":")[0].strip()
        if status == "ERROR":
            why = body.get(self.API.detail_field) or "no reason given"
            raise PermanentError(f"{self.who}: container {container} failed: {redact(str(why))[:300]}")
        return status

    def _wait(self, container: str, status: str) -> None:
        every, bound = self.poll_limits()
        deadline = time.monotonic() + bound
        while status != "FINISHED":
            if status in ("PUBLISHED", "EXPIRED"):
                raise TransientError(f"{self.who}: container {container} became {status} meanwhile",
                                     ambiguous=status == "PUBLISHED")
            if time.monotonic() >= deadline:  # the container is kept: the next attempt resumes it
                raise TransientError(f"{self.who}: container {container} not ready after {bound:g}s "
                                     f"(status {status or 'unknown'})")
            time.sleep(every)
            status = self._status(container)

    def _id(self, resp: web.Response, what: str) -> str:
        ident = str(resp.body.get("id") or "")
        if not ident:
            raise TransientError(f"{self.who}: success without a {what} id", ambiguous=True)
        return ident
