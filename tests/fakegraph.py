"""A fake graph.facebook.com: a real HTTP server on 127.0.0.1 for tests and benchmarks.

It follows the Graph API wire format (see /work/shared/graph-api-notes.md): form or
JSON bodies, page tokens in the body or an ``Authorization: Bearer`` header, Graph
error bodies, and the ``X-App-Usage`` / ``X-Business-Use-Case-Usage`` headers.
All state lives in the `FakeGraph` object, so a daemon running in a subprocess can
be driven and inspected from the test process::

    with FakeGraph({"111": "TOKEN"}) as graph:
        graph.fail_next(Fault.http_500(create=True))
        ...  # run the daemon against graph.url
        assert len(graph.wait_for_posts(1, timeout=5)) == 1

Standalone (prints the URL, serves until SIGTERM)::

    python tests/fakegraph.py --port 0 --page 111=TOKEN --latency 0.02
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.parser
import email.policy
import json
import math
import random
import re
import signal
import socket
import string
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlsplit

JsonDict = dict[str, Any]

FIRST_POST_NUMBER = 1_000_000_000_000
DRIP_INTERVAL = 0.2
INVALID_TOKEN_MESSAGE = (
    "Error validating access token: The session is invalid because the user logged out."
)
UNAVAILABLE_MESSAGE = "(#2) Service temporarily unavailable"
DEFAULT_MESSAGES: dict[int, str] = {
    1: "An unknown error has occurred.",
    2: UNAVAILABLE_MESSAGE,
    4: "(#4) Application request limit reached",
    10: "(#10) Application does not have permission for this action",
    17: "(#17) User request limit reached",
    32: "(#32) Page request limit reached",
    100: "(#100) Invalid parameter",
    102: "Session key invalid or no longer valid",
    190: INVALID_TOKEN_MESSAGE,
    200: "(#200) If posting to a page, requires both pages_read_engagement and "
    "pages_manage_posts permission",
    341: "(#341) Feed action request limit reached",
    368: "(#368) The action attempted has been deemed abusive or is otherwise disallowed",
    506: "(#506) Duplicate status message",
    613: "(#613) Calls to this api have exceeded the rate limit.",
    80001: "(#80001) There have been too many calls to this Page account. "
    "Wait a bit and try again.",
}
TRANSIENT_CODES = frozenset({1, 2, 4})
DEFAULT_SCOPES = ("pages_show_list", "pages_read_engagement", "pages_manage_posts")
FAKE_APP_ID = "1234567890"
POST_FIELDS = frozenset(
    {"id", "message", "created_time", "permalink_url", "is_published", "full_picture"}
)
_PATH = re.compile(r"^/(v\d+\.\d+)/(.+?)/?$")
_TRACE_CHARS = string.ascii_letters + string.digits + "_-"


@dataclass
class Received:
    """One request the server got (``status``/``response`` are filled in once answered)."""

    at: float  # time.time() on arrival, before latency or faults
    method: str
    path: str  # e.g. "/v25.0/111/feed", no query string
    query: dict[str, str]  # query string, access_token removed (see token_in_url)
    fields: dict[str, str]  # form/JSON/multipart body fields, access_token removed
    token: str | None  # the token presented (header, body or query), None if none
    token_in_url: bool  # access_token was in the query string: a client bug
    status: int = 0  # HTTP status sent; 0 if the connection was dropped (or still pending)
    response: JsonDict | None = None  # JSON body sent; None if it was not a Graph JSON object
    token_in_header: bool = False  # the token came as `Authorization: Bearer`, as it should


@dataclass
class Post:
    """A post that exists on the fake page."""

    id: str  # "{page_id}_{n}"
    page_id: str
    message: str
    link: str | None
    image: str | None  # the `url` of a /photos post (or "<file NAME: N bytes>" for `source`)
    created_time: float  # time.time()
    photo_id: str | None
    published: bool = True  # False for `published=false` feed posts (not listed on the page)
    scheduled_publish_time: int | None = None
    parent: str | None = None  # for a comment: the id of the post it is under
    attached: tuple[str, ...] = ()  # photo ids of a feed post's attached_media


FaultKind = Literal[
    "none", "graph_error", "http_500", "timeout", "drop", "retry_after",
    "huge_body", "slow_drip", "non_json", "redirect",
]


@dataclass(frozen=True)
class Fault:
    """What to do to one POST instead of (or after) handling it normally.

    Build with the classmethods. ``create=True`` means the request is first handled
    normally (so a valid post is created) and the fault is applied to the answer.
    """

    kind: FaultKind
    create: bool = False
    seconds: float = 0.0
    code: int = 0
    subcode: int | None = None
    http_status: int = 400
    message: str = ""
    is_transient: bool | None = None
    regain_minutes: int | None = None
    nbytes: int = 0
    location: str = ""

    @classmethod
    def none(cls) -> Fault:
        """Handle the POST normally (to aim a later queued fault at the Nth POST)."""
        return cls("none")

    @classmethod
    def graph_error(
        cls, code: int, subcode: int | None = None, http_status: int | None = None,
        message: str | None = None, is_transient: bool | None = None,
        regain_minutes: int | None = None,
    ) -> Fault:
        """A Graph error body with a realistic default message for `code`.

        `http_status` defaults to 500 for codes 1 and 2, 403 for permission codes
        (10, 200-299) and 400 otherwise; `is_transient` defaults to true for 1, 2, 4.
        With `regain_minutes`, X-Business-Use-Case-Usage reports 100% and that regain time.
        """
        if http_status is None:
            http_status = _default_status(code)
        if is_transient is None and code in TRANSIENT_CODES:
            is_transient = True
        text = message if message is not None else DEFAULT_MESSAGES.get(
            code, f"(#{code}) An unknown error has occurred.")
        return cls("graph_error", code=code, subcode=subcode, http_status=http_status,
                   message=text, is_transient=is_transient, regain_minutes=regain_minutes)

    @classmethod
    def http_500(cls, create: bool = False) -> Fault:
        """HTTP 500 with a code-2 body; with `create` the post is created anyway."""
        return cls("http_500", create=create)

    @classmethod
    def timeout(cls, seconds: float, create: bool = True) -> Fault:
        """Sleep `seconds` before answering; with `create` the post exists before the sleep.

        After the sleep the normal answer is sent if the post was created, else a 500.
        """
        return cls("timeout", create=create, seconds=seconds)

    @classmethod
    def drop(cls, create: bool = False) -> Fault:
        """Close the connection without any response."""
        return cls("drop", create=create)

    @classmethod
    def retry_after(cls, seconds: int) -> Fault:
        """HTTP 503 with a Retry-After header and a code-2 body."""
        return cls("retry_after", seconds=seconds)

    @classmethod
    def huge_body(cls, nbytes: int) -> Fault:
        """HTTP 200 with a valid JSON body of `nbytes` bytes: {"id":"1","pad":"xxx..."}."""
        return cls("huge_body", nbytes=nbytes)

    @classmethod
    def slow_drip(cls, seconds: float) -> Fault:
        """Handle normally (the post is created), then send the answer one byte every 0.2 s
        for about `seconds`.

        The real answer is padded with leading whitespace (still valid JSON); no
        Content-Length, and the connection closes afterwards.
        """
        return cls("slow_drip", create=True, seconds=seconds)

    @classmethod
    def non_json(cls) -> Fault:
        """HTTP 200 with a text/html body "<html>oops</html>"."""
        return cls("non_json")

    @classmethod
    def redirect(cls, location: str) -> Fault:
        """HTTP 302 to `location`, empty body."""
        return cls("redirect", location=location)


@dataclass
class _Reply:
    status: int
    body: JsonDict
    headers: dict[str, str] = field(default_factory=dict)


def _default_status(code: int) -> int:
    if code in (1, 2):
        return 500
    if code == 10 or 200 <= code <= 299:
        return 403
    return 400


def _error(status: int, code: int, message: str, subcode: int | None = None,
           is_transient: bool | None = None, kind: str = "OAuthException") -> _Reply:
    error: JsonDict = {"message": message, "type": kind, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    if is_transient is not None:
        error["is_transient"] = is_transient
    return _Reply(status, {"error": error})  # fbtrace_id is added when sent


def _invalid_token() -> _Reply:
    return _error(400, 190, INVALID_TOKEN_MESSAGE, subcode=460)


def _unavailable() -> _Reply:
    return _error(500, 2, UNAVAILABLE_MESSAGE, is_transient=True)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("false", "0", "")


def _graph_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(t))


def _parse_body(content_type: str, raw: bytes) -> dict[str, str] | None:
    """Body fields as strings (JSON values other than strings are re-encoded); None if bad."""
    if not raw:
        return {}
    kind = content_type.split(";")[0].strip().lower()
    try:
        if kind == "application/json":
            data = json.loads(raw)
            if not isinstance(data, dict):
                return None
            return {str(k): v if isinstance(v, str) else _dumps(v) for k, v in data.items()}
        if kind == "multipart/form-data":
            return _parse_multipart(content_type, raw)
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        return None


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, str]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        fields[name] = (f"<file {filename}: {len(data)} bytes>" if filename
                        else data.decode("utf-8", "replace"))
    return fields


class FakeGraph:
    """An in-process Graph API server; see the module docstring."""

    def __init__(self, pages: dict[str, str] | None = None, *, version: str = "v25.0",
                 latency: float = 0.0, seed: int = 0, port: int = 0) -> None:
        """`pages` maps page id -> its valid page token; `latency` is slept per request."""
        self.version = version
        self.latency = latency
        self.port = port
        self.url = ""
        self.received: list[Received] = []
        self.posts: list[Post] = []
        self.errors: list[str] = []  # tracebacks of bugs in the fake itself (should stay empty)
        self._pages: dict[str, str] = dict(pages or {})
        self._retired: dict[str, str] = {}  # old token -> page, answered as invalid by debug_token
        self._token_info: dict[str, tuple[int, tuple[str, ...]]] = {}  # page -> expires_at, scopes
        self._app_token: str | None = None
        self._cond = threading.Condition()
        self._next_number = FIRST_POST_NUMBER
        self._queued: list[tuple[str | None, Fault]] = []
        self._random_rate = 0.0
        self._random_faults: list[Fault] = []
        self._rng = random.Random(seed)
        self._trace_rng = random.Random(seed + 1)
        self._usage: dict[str, tuple[int, int]] = {}
        self.photos: dict[str, tuple[str, str]] = {}  # unpublished photo id -> (page id, url)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> FakeGraph:
        """Start serving on 127.0.0.1 (port 0 = any free port) and set `url`."""
        if self._server is not None:
            raise RuntimeError("FakeGraph already started")
        self._stopping = threading.Event()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.fake = self
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fakegraph", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly: wakes sleeping handlers and closes open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections(timeout=2.0)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> FakeGraph:
        return self.start() if self._server is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """`url` plus the default version, e.g. "http://127.0.0.1:PORT/v25.0"."""
        return f"{self.url}/{self.version}"

    # -- configuration ----------------------------------------------------------

    def add_page(self, page_id: str, token: str) -> None:
        """Add a page and its valid page token."""
        with self._cond:
            self._pages[page_id] = token

    def set_token(self, page_id: str, token: str) -> None:
        """Rotate the page's valid token: the old one now gets code 190."""
        with self._cond:
            old = self._pages.get(page_id)
            if old is not None and old != token:
                self._retired[old] = page_id
        self.add_page(page_id, token)

    def set_token_info(self, page_id: str, *, expires_at: int = 0,
                       scopes: tuple[str, ...] = DEFAULT_SCOPES) -> None:
        """What /debug_token says about the page's token: unix expiry (0 = never) and scopes."""
        with self._cond:
            self._token_info[page_id] = (expires_at, scopes)

    def set_app(self, app_id: str, secret: str) -> None:
        """Accept the app token `app_id|secret` on /debug_token."""
        with self._cond:
            self._app_token = f"{app_id}|{secret}"

    def fail_next(self, *faults: Fault, page_id: str | None = None) -> None:
        """Queue faults for the next POSTs (to `page_id` only, if given), first in first out."""
        with self._cond:
            self._queued.extend((page_id, fault) for fault in faults)

    def fail_randomly(self, rate: float, faults: list[Fault]) -> None:
        """Fail each POST (not taken by a queued fault) with probability `rate`, picking
        from `faults` with the seeded RNG; rate 0 turns it off."""
        if not 0.0 <= rate <= 1.0 or (rate > 0 and not faults):
            raise ValueError("rate must be in [0, 1] and faults non-empty")
        with self._cond:
            self._random_rate, self._random_faults = rate, list(faults)

    def set_usage(self, page_id: str, call_count: int, regain_minutes: int = 0) -> None:
        """Report this usage (percent) in X-Business-Use-Case-Usage and X-App-Usage
        on every response for the page."""
        with self._cond:
            self._usage[page_id] = (call_count, regain_minutes)

    def reset(self) -> None:
        """Forget requests, posts, faults, usage and errors; pages and the id counter stay."""
        with self._cond:
            self.received.clear()
            self.posts.clear()
            self.photos.clear()
            self.errors.clear()
            self._queued.clear()
            self._random_rate, self._random_faults = 0.0, []
            self._usage.clear()

    # -- inspection -------------------------------------------------------------

    def posts_for(self, page_id: str) -> list[Post]:
        """Posts created on one page, oldest first (published or not; comments excluded)."""
        with self._cond:
            return [post for post in self.posts if post.page_id == page_id and post.parent is None]

    def comments_on(self, post_id: str) -> list[Post]:
        """Comments under one post, oldest first."""
        with self._cond:
            return [post for post in self.posts if post.parent == post_id]

    def wait_for_posts(self, n: int, timeout: float) -> list[Post]:
        """Block until at least `n` posts exist; return all posts (fewer on timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.posts) >= n, timeout)
            return list(self.posts)

    # -- internals used by the handler -----------------------------------------------

    def _record(self, received: Received) -> None:
        with self._cond:
            self.received.append(received)

    def _pause(self, seconds: float) -> bool:
        """Sleep unless stopping; True if the server is stopping."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()

    def _trace_id(self) -> str:
        with self._cond:
            return "".join(self._trace_rng.choices(_TRACE_CHARS, k=23))

    def _take_fault(self, page_id: str | None) -> Fault | None:
        with self._cond:
            for i, (target, fault) in enumerate(self._queued):
                if target is None or target == page_id:
                    del self._queued[i]
                    return fault
            if self._random_rate > 0 and self._rng.random() < self._random_rate:
                return self._rng.choice(self._random_faults)
        return None

    def _page_for_token(self, token: str | None) -> str | None:
        with self._cond:
            return next((page for page, valid in self._pages.items() if valid == token), None)

    def _usage_headers(self, page_id: str | None, regain_minutes: int | None) -> dict[str, str]:
        with self._cond:
            usage = self._usage.get(page_id or "")
        count, regain = usage or (0, 0)
        if regain_minutes is not None:
            count, regain = max(count, 100), regain_minutes
        headers = {"X-App-Usage": _dumps(
            {"call_count": count, "total_time": count, "total_cputime": count})}
        if usage or regain_minutes is not None:
            headers["X-Business-Use-Case-Usage"] = _dumps({page_id or "0": [{
                "type": "pages", "call_count": count, "total_cputime": count,
                "total_time": count, "estimated_time_to_regain_access": regain}]})
        return headers

    def _route(self, method: str, segments: list[str], params: dict[str, str],
               token: str | None) -> _Reply:
        if segments == ["debug_token"] and method == "GET":
            return self._debug_token(params.get("input_token"), token)
        if segments == ["me"] and method == "GET":
            page_id = self._page_for_token(token)
            if page_id is None:
                return _invalid_token()
            return _Reply(200, {"id": page_id, "name": f"Fake Page {page_id}"})
        if len(segments) == 2:
            page_id, edge = segments
            endpoints: dict[tuple[str, str], Callable[[str, dict[str, str]], _Reply]] = {
                ("POST", "feed"): self._create_feed_post,
                ("POST", "photos"): self._create_photo,
                ("GET", "feed"): self._list_posts,
                ("GET", "published_posts"): self._list_posts,
            }
            endpoint = endpoints.get((method, edge))
            if endpoint is not None:
                return self._check_auth(page_id, token, method) or endpoint(page_id, params)
            if edge == "comments":
                return self._comments(method, page_id, params, token)
        alias = "/".join(segments)
        return _error(404, 803, f"(#803) Some of the aliases you requested do not exist: {alias}")

    def _debug_token(self, input_token: str | None, token: str | None) -> _Reply:
        """GET /debug_token: `data` about `input_token`, asked with an app or page token."""
        with self._cond:
            allowed = token is not None and (token == self._app_token or token in self._pages.values())
            page_id = self._page_for_token(input_token)
            retired = self._retired.get(input_token or "")
            expires_at, scopes = self._token_info.get(page_id or retired or "", (0, DEFAULT_SCOPES))
        if not allowed:
            return _invalid_token()
        if not input_token:
            return _error(400, 100, "(#100) The parameter input_token is required")
        data: JsonDict = {"app_id": FAKE_APP_ID, "type": "PAGE", "application": "oyez test app",
                          "data_access_expires_at": 0, "expires_at": expires_at,
                          "scopes": list(scopes), "user_id": "10000001"}
        if page_id is None:
            data["is_valid"] = False
            data["error"] = {"code": 190, "subcode": 460, "message": INVALID_TOKEN_MESSAGE}
            if retired is not None:
                data["profile_id"] = retired
        else:
            data.update(is_valid=True, issued_at=int(time.time()) - 3600, profile_id=page_id,
                        granular_scopes=[{"scope": s, "target_ids": [page_id]} for s in scopes
                                         if s.startswith("pages_")])
            if expires_at and expires_at < time.time():
                data["is_valid"] = False
                data["error"] = {"code": 190, "subcode": 463, "message": (
                    "Error validating access token: Session has expired on "
                    f"{time.strftime('%A, %d-%b-%y %H:%M:%S PST', time.gmtime(expires_at))}.")}
        return _Reply(200, {"data": data})

    def _check_auth(self, page_id: str, token: str | None, method: str) -> _Reply | None:
        with self._cond:
            known = token is not None and token in self._pages.values()
            valid = self._pages.get(page_id)
        if not known:
            return _invalid_token()
        if valid is None:
            return _error(400, 100, (
                f"Unsupported {method.lower()} request. Object with ID '{page_id}' does not "
                "exist, cannot be loaded due to missing permissions, or does not support this "
                "operation. Please read the Graph API documentation at "
                "https://developers.facebook.com/docs/graph-api"),
                subcode=33, kind="GraphMethodException")
        return None if token == valid else _invalid_token()

    def _comments(self, method: str, post_id: str, params: dict[str, str],
                  token: str | None) -> _Reply:
        """POST /{post-id}/comments (message) -> {"id"}; GET lists them like a page's posts."""
        with self._cond:
            parent = next((p for p in self.posts if p.id == post_id), None)
        if parent is None:
            return _error(400, 100, f"(#100) Object with ID '{post_id}' does not exist",
                          subcode=33, kind="GraphMethodException")
        denied = self._check_auth(parent.page_id, token, method)
        if denied is not None:
            return denied
        if method == "GET":
            return self._listing([p for p in reversed(self.comments_on(post_id))], params,
                                 f"{post_id}/comments")
        if not params.get("message"):
            return _error(400, 100, "(#100) Missing message or attachment")
        with self._cond:
            number = self._new_number()
            comment = Post(f"{post_id.rpartition('_')[2]}_{number}", parent.page_id,
                           params["message"], None, None, time.time(), None, parent=post_id)
            self.posts.append(comment)
            self._cond.notify_all()
        return _Reply(200, self._created(comment.id, params, f"https://www.facebook.com/{post_id}"
                                         f"?comment_id={number}"))

    @staticmethod
    def _created(post_id: str, params: dict[str, str], permalink: str) -> JsonDict:
        """A create call's answer: the id, and the permalink when `fields` asks for it."""
        fields = params.get("fields", "").split(",")
        return {"id": post_id, **({"permalink_url": permalink} if "permalink_url" in fields else {})}

    def _add_post(self, page_id: str, message: str, *, link: str | None = None,
                  image: str | None = None, with_photo: bool = False, published: bool = True,
                  scheduled: int | None = None, attached: tuple[str, ...] = ()) -> Post:
        with self._cond:
            number = self._new_number()
            post = Post(f"{page_id}_{number}", page_id, message, link, image, time.time(),
                        str(number) if with_photo else None, published, scheduled,
                        attached=attached)
            self.posts.append(post)
            self._cond.notify_all()
            return post

    def _new_number(self) -> int:
        with self._cond:
            self._next_number += 1
            return self._next_number

    def _create_feed_post(self, page_id: str, params: dict[str, str]) -> _Reply:
        message, link = params.get("message", ""), params.get("link") or None
        if not message and not link and not any(k.startswith("attached_media") for k in params):
            return _error(400, 100, "(#100) Missing message or attachment")
        published = _truthy(params.get("published", "true"))
        scheduled: int | None = None
        if "scheduled_publish_time" in params:
            if published:
                return _error(400, 100, "(#100) You cannot specify a scheduled publish time "
                              "on a published post")
            try:
                scheduled = int(params["scheduled_publish_time"])
            except ValueError:
                scheduled = 0
            if not time.time() + 600 <= scheduled <= time.time() + 75 * 86400:
                return _error(400, 100, "(#100) The specified scheduled publish time is invalid.")
        attached = []
        for key in sorted((k for k in params if k.startswith("attached_media")),
                          key=lambda k: int(re.sub(r"\D", "", k) or 0)):
            try:  # form style: attached_media[0]={"media_fbid": "..."}
                photo = str(json.loads(params[key])["media_fbid"])
            except (ValueError, KeyError, TypeError):
                return _error(400, 100, f"(#100) param {key} must be a JSON object with media_fbid")
            with self._cond:
                known = self.photos.get(photo)
            if known is None or known[0] != page_id:
                return _error(400, 100, f"(#100) Invalid media_fbid {photo}")
            attached.append(photo)
        post = self._add_post(page_id, message, link=link, published=published,
                              scheduled=scheduled, attached=tuple(attached))
        return _Reply(200, self._created(post.id, params, f"https://www.facebook.com/{post.id}"))

    def _create_photo(self, page_id: str, params: dict[str, str]) -> _Reply:
        image = params.get("url") or params.get("source")
        if not image:
            return _error(400, 324, "(#324) Requires upload file")
        if not _truthy(params.get("published", "true")):  # uploaded for attached_media
            photo = str(self._new_number())
            with self._cond:
                self.photos[photo] = (page_id, image)
            return _Reply(200, {"id": photo})
        message = params.get("message") or params.get("caption") or ""
        post = self._add_post(page_id, message, image=image, with_photo=True)
        return _Reply(200, {"id": post.photo_id, "post_id": post.id})

    def _list_posts(self, page_id: str, params: dict[str, str]) -> _Reply:
        wanted = [f.strip() for f in params.get("fields", "id,message,created_time").split(",")]
        wanted = [f for f in wanted if f]
        unknown = [f for f in wanted if f not in POST_FIELDS]
        if unknown:
            return _error(400, 100, f"(#100) Tried accessing nonexisting field ({unknown[0]}) "
                          "on node type (PagePost)")
        matching = [p for p in reversed(self.posts_for(page_id)) if p.published]
        return self._listing(matching, {**params, "fields": ",".join(wanted)},
                             f"{page_id}/published_posts")

    def _listing(self, matching: list[Post], params: dict[str, str], path: str,
                 as_json: Callable[[Post, list[str]], JsonDict] | None = None) -> _Reply:
        """One page of `matching` (newest first) with Graph's cursors; `since` is applied here
        too, so callers that do not filter it get it right."""
        wanted = [f for f in (f.strip() for f in params.get("fields", "id").split(",")) if f]
        try:
            limit = max(min(int(params.get("limit", "25")), 100), 1)
            since = float(params["since"]) if params.get("since") else None
            offset = int(base64.urlsafe_b64decode(params["after"]).decode()) if params.get("after") else 0
        except (ValueError, UnicodeDecodeError):
            return _error(400, 100, "(#100) Invalid parameter")
        matching = [p for p in matching if since is None or p.created_time >= since]
        posts = matching[offset:offset + limit]
        data = [(as_json or self._post_json)(p, wanted) for p in posts]
        body: JsonDict = {"data": data}
        if data:  # cursors as the real API gives them: opaque base64; `next` only when there is more
            def cursor(n: int) -> str:
                return base64.urlsafe_b64encode(str(n).encode()).decode()

            body["paging"] = {"cursors": {"before": cursor(offset), "after": cursor(offset + len(data))}}
            if offset + len(data) < len(matching):
                body["paging"]["next"] = (f"{self.base_url}/{path}?limit={limit}"
                                          f"&after={cursor(offset + len(data))}")
        return _Reply(200, body)

    @staticmethod
    def _post_json(post: Post, wanted: list[str]) -> JsonDict:
        values: dict[str, Any] = {
            "id": post.id,
            "message": post.message or None,
            "created_time": _graph_time(post.created_time),
            "permalink_url": f"https://www.facebook.com/{post.id}",
            "is_published": post.published,
            "full_picture": post.image,
        }
        return {f: values[f] for f in wanted if values[f] is not None}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes connections itself rather than waiting forever
    request_queue_size = 128  # like a real server's backlog: a burst opens many connections at once
    fake: FakeGraph

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._live: dict[socket.socket, threading.Thread] = {}
        self._live_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._live_lock:
            self._live[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                self._live.pop(request, None)

    def close_connections(self, timeout: float) -> None:
        with self._live_lock:
            live = list(self._live.items())
        for sock, _ in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in live:
            thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is not news
            self.fake.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    _received: Received
    _trace: str
    _page_id: str | None
    _version: str  # the version the client asked for, echoed like Graph does

    def setup(self) -> None:
        super().setup()  # answers go out as headers + body writes: don't let Nagle delay them
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def version_string(self) -> str:
        return "fakegraph"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads `FakeGraph.received` instead."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    @property
    def fake(self) -> FakeGraph:
        return cast(_Server, self.server).fake

    def _dispatch(self) -> None:
        fake = self.fake
        at = time.time()
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        fields = _parse_body(self.headers.get("Content-Type", ""), self._read_body())
        url_token = query.pop("access_token", None)
        body_token = fields.pop("access_token", None) if fields is not None else None
        scheme, _, header_token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "oauth"):
            header_token = ""
        token = header_token.strip() or body_token or url_token
        self._received = Received(at, self.command, parts.path, query, dict(fields or {}),
                                  token, url_token is not None,
                                  token_in_header=bool(header_token.strip()))
        fake._record(self._received)
        self._trace = fake._trace_id()
        match = _PATH.match(parts.path)
        segments = match.group(2).split("/") if match else [parts.path.strip("/")]
        self._version = match.group(1) if match else fake.version
        self._page_id = segments[0] if segments[0] != "me" else fake._page_for_token(token)
        try:
            fake._pause(fake.latency)
            if fields is None:
                self._send(_error(400, 100, "(#100) Invalid request body"))
                return

            params = {**query, **fields}  # like Graph, POST parameters may be in the query

            def route() -> _Reply:
                if not match:
                    return _error(404, 803, f"(#803) Unknown path: {parts.path}")
                return fake._route(self.command, segments, params, token)

            fault = fake._take_fault(segments[0]) if self.command == "POST" else None
            if fault is None:
                self._send(route())
            else:
                self._apply(fault, route)
        except OSError:  # the client went away
            self.close_connection = True
        except Exception:
            fake.errors.append(traceback.format_exc())
            self.close_connection = True

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _apply(self, fault: Fault, route: Callable[[], _Reply]) -> None:
        created = route() if fault.create else None
        if fault.kind == "none":
            self._send(route())
        elif fault.kind == "graph_error":
            reply = _error(fault.http_status, fault.code, fault.message, fault.subcode,
                           fault.is_transient)
            self._send(reply, fault.regain_minutes)
        elif fault.kind == "http_500":
            self._send(_error(500, 2, "An unexpected error has occurred. Please retry your "
                              "request later.", is_transient=True))
        elif fault.kind == "timeout":
            if not self.fake._pause(fault.seconds):
                self._send(created or _unavailable())
        elif fault.kind == "drop":
            self.close_connection = True
        elif fault.kind == "retry_after":
            reply = _unavailable()
            reply.status, reply.headers["Retry-After"] = 503, str(round(fault.seconds))
            self._send(reply)
        elif fault.kind == "huge_body":
            pad = max(0, fault.nbytes - len('{"id":"1","pad":""}'))
            self._write(200, b'{"id":"1","pad":"' + b"x" * pad + b'"}')
        elif fault.kind == "slow_drip":
            self._drip(created or route(), fault.seconds)
        elif fault.kind == "non_json":
            self._write(200, b"<html>oops</html>", content_type="text/html; charset=UTF-8")
        elif fault.kind == "redirect":
            self._write(302, b"", headers={"Location": fault.location})

    def _send(self, reply: _Reply, regain_minutes: int | None = None) -> None:
        body = reply.body
        if "error" in body:
            body = {"error": {**body["error"], "fbtrace_id": self._trace}}
        self._received.response = body
        self._write(reply.status, _dumps(body).encode(), headers=reply.headers,
                    regain_minutes=regain_minutes)

    def _write(self, status: int, body: bytes, *, content_type: str = "application/json",
               headers: dict[str, str] | None = None, regain_minutes: int | None = None,
               length: bool = True) -> None:
        self._received.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("x-fb-trace-id", self._trace)
        self.send_header("facebook-api-version", self._version)
        usage = self.fake._usage_headers(self._page_id, regain_minutes)
        for name, value in {**usage, **(headers or {})}.items():
            self.send_header(name, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, reply: _Reply, seconds: float) -> None:
        body = _dumps(reply.body).encode()
        data = b" " * max(0, math.ceil(seconds / DRIP_INTERVAL) - len(body)) + body
        interval = min(DRIP_INTERVAL, seconds / max(1, len(data) - 1))  # long bodies go faster
        self._received.response = reply.body
        self._write(reply.status, b"", length=False)
        for i in range(len(data)):
            self.wfile.write(data[i : i + 1])
            if i < len(data) - 1 and self.fake._pause(interval):
                return


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; print the base URL (without version) on stdout first."""
    parser = argparse.ArgumentParser(description="Serve a fake Graph API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page", action="append", default=[], metavar="PAGE_ID=TOKEN")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--version", default="v25.0", help="reported API version")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pages: dict[str, str] = {}
    for spec in args.page:
        page_id, sep, token = spec.partition("=")
        if not (sep and page_id and token):
            parser.error(f"--page wants PAGE_ID=TOKEN, got {spec!r}")
        pages[page_id] = token
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with FakeGraph(pages, version=args.version, latency=args.latency, seed=args.seed,
                   port=args.port) as graph:
        sys.stdout.write(graph.url + "\n")
        sys.stdout.flush()
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
