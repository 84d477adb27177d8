"""The WSGI application: routes, the token, the read-only rule and the security headers.

    GET /                 timeline: ?from=YYYY-MM-DD (in jobs.yaml's timezone) &days=N
    GET /delivery/ID      one delivery and its attempts
    GET /status           daemons, running vs on-disk jobs.yaml, targets, reloads
    GET /calendar.ics     the plan as iCalendar (see `scheduler.ics`)
    GET /metrics          Prometheus text format (see `metrics`)
    GET /healthz          JSON, 200 or 503 with reasons; no token, no post text

Every other method is 405: nothing here writes, and the ledger is opened read-only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http import HTTPStatus
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined

from .. import clock, ics, report
from ..config import Config
from ..errors import OyezError
from . import metrics, timeline

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

    from ..ledger import Ledger

log = logging.getLogger(__name__)

HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
SECURITY_HEADERS = [
    # no script at all, styles only from here, images only from here (post images are linked,
    # not shown: loading them would tell their host who looks at embargoed posts, and when)
    ("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]
DEFAULT_DAYS = 22  # yesterday and the three weeks after it
MAX_DAYS = 92
STATIC = {name: (resources.files(__package__).joinpath(f"static/{name}").read_bytes(), kind)
          for name, kind in [("style.css", "text/css; charset=utf-8"), ("icon.svg", "image/svg+xml")]}


@dataclass
class Response:
    """What a route answers."""

    status: int
    body: bytes
    content_type: str = HTML
    headers: list[tuple[str, str]] = field(default_factory=list)


class BadRequest(ValueError):
    """A query parameter is malformed; the message says which and how."""


class App:
    """The WSGI callable. `token`, when set, is required on every route but /healthz."""

    def __init__(self, config_path: str, db: str, token: str | None,
                 now: Callable[[], datetime] = clock.now) -> None:
        self.config_path = config_path
        self.db = db
        self.token = token
        self.now = now
        self._ledger: Ledger | None = None
        self._lock = threading.Lock()
        self.templates = Environment(loader=PackageLoader("scheduler.web", "templates"),
                                     autoescape=True, undefined=StrictUndefined)
        self.templates.globals.update(look=timeline.look, lateness=timeline.lateness)
        self.templates.filters["todatetime"] = datetime.fromisoformat
        self.templates.filters["stamp"] = lambda iso: iso and f"{iso[:10]} {iso[11:19]}"  # UTC, seconds

    def ledger(self) -> Ledger | str:
        """The read-only ledger, opened once it exists (the URL while it does not)."""
        with self._lock:
            if self._ledger is None:
                self._ledger = report.open_ledger(self.db)
            return self._ledger or self.db

    # --- WSGI --------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO") or "/"
        try:
            resp = self.respond(method, path, environ.get("QUERY_STRING", ""),
                                environ.get("HTTP_AUTHORIZATION", ""))
        except OyezError as exc:  # e.g. a ledger whose schema the daemon has not upgraded yet
            resp = (Response(503, json.dumps({"ok": False, "reasons": [str(exc)]}).encode() + b"\n",
                             "application/json") if path == "/healthz" else
                    Response(503, f"{exc}\n".encode(), TEXT))
        except Exception:  # one bad page must not take the server (or the daemon) down
            log.exception("the page failed on %s %s", method, path)
            resp = Response(500, b"internal error: the oyez log says what happened\n", TEXT)
        cache = "max-age=3600" if path.startswith("/static/") else "no-store"
        headers = [("Content-Type", resp.content_type), ("Content-Length", str(len(resp.body))),
                   ("Cache-Control", cache), *SECURITY_HEADERS, *resp.headers]
        start_response(f"{resp.status} {HTTPStatus(resp.status).phrase}", headers)
        return [] if method == "HEAD" else [resp.body]

    def respond(self, method: str, path: str, query: str, authorization: str) -> Response:
        """Route one request."""
        if method not in ("GET", "HEAD"):
            return Response(405, b"read-only: only GET and HEAD are allowed\n", TEXT,
                            [("Allow", "GET, HEAD")])
        if path == "/healthz":
            return self.healthz()
        if not self.authorised(authorization):
            return Response(401, b"this page needs the token (OYEZ_WEB_TOKEN)\n", TEXT,
                            [("WWW-Authenticate", 'Basic realm="oyez", charset="UTF-8"')])
        root = "../" * (path.count("/") - 1) or "./"  # relative links: it may live under a prefix
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        try:
            if path == "/":
                return self.timeline(params, root)
            if path == "/status":
                return self.status(root)
            if match := re.fullmatch(r"/delivery/(\d{1,18})", path):
                return self.delivery(int(match[1]), root)
            if path == "/calendar.ics":
                return self.calendar(params)
            if path == "/metrics":
                return Response(200, metrics.render(self.config_path, self.ledger(), self.now()),
                                metrics.CONTENT_TYPE)
            if path.startswith("/static/") and path[8:] in STATIC:
                return Response(200, *STATIC[path[8:]])
        except BadRequest as exc:
            return self.page("error.html", root, 400, title="Bad request", message=str(exc))
        return self.page("error.html", root, 404, title="Not found",
                         message=f"There is no page at {path}.")

    def authorised(self, header: str) -> bool:
        """No token configured, or the header carries it (Bearer, or Basic with any user name)."""
        if self.token is None:
            return True
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        else:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def page(self, template: str, root: str, status: int = 200, **context: Any) -> Response:
        """Render an HTML page."""
        body = self.templates.get_template(template).render(
            root=root, now=self.now(), config_path=self.config_path, **context)
        return Response(status, body.encode())

    # --- routes ------------------------------------------------------------
    def healthz(self) -> Response:
        """200 when all is well, 503 with the reasons otherwise (`oyez status`'s rules)."""
        now = self.now()
        reasons = report.attention(self.config_path, self.ledger(), now)
        body = {"ok": not reasons, "reasons": reasons, "checked_at": now.isoformat()}
        return Response(503 if reasons else 200, json.dumps(body).encode() + b"\n",
                        "application/json")

    def _config(self) -> Config | None:
        return report.read_disk(self.config_path, None).config

    def timeline(self, params: dict[str, str], root: str) -> Response:
        """The coming weeks day by day, and what became of the past ones."""
        cfg = self._config()
        zone = cfg.timezone if cfg else ZoneInfo("UTC")
        now = self.now()
        first, days = _window(params, now.astimezone(zone).date())
        start = datetime.combine(first, datetime.min.time(), zone)
        end = datetime.combine(first + timedelta(days=days), datetime.min.time(), zone)
        ledger = self.ledger()
        rows = report.timeline_rows(cfg, start, end, ledger)
        return self.page(
            "timeline.html", root, title="Timeline", cfg=cfg, zone=zone, first=first, count=days,
            days=timeline.days(rows, cfg, zone, first, days, now),
            events={e.id: (e.title, e.starts.astimezone(zone).date().isoformat())
                    for e in (cfg.live_events if cfg else ())},
            earlier=(first - timedelta(days=7)).isoformat(), later=(first + timedelta(days=7)).isoformat(),
            attention=report.attention(self.config_path, ledger, now))

    def status(self, root: str) -> Response:
        """Daemons, the file running vs on disk, targets, reloads."""
        state = report.status(self.config_path, self.ledger(), self.now())
        return self.page("status.html", root, title="Status", state=state)

    def delivery(self, delivery_id: int, root: str) -> Response:
        """One delivery and every attempt at it."""
        detail = report.delivery_detail(self.ledger(), delivery_id, self._config())
        if detail is None:
            return self.page("error.html", root, 404, title="Not found",
                             message=f"There is no delivery {delivery_id} in the ledger.")
        return self.page("delivery.html", root, title=f"Delivery {delivery_id}", d=detail)

    def calendar(self, params: dict[str, str]) -> Response:
        """The plan as an iCalendar feed."""
        now = self.now()
        rows = report.timeline_rows(self._config(), now - ics.DEFAULT_BACK, now + ics.DEFAULT_AHEAD,
                                    self.ledger())
        return Response(200, ics.feed(rows, now), "text/calendar; charset=utf-8",
                        [("Content-Disposition", 'inline; filename="oyez.ics"')])


def _window(params: dict[str, str], today: date) -> tuple[date, int]:
    """The first day and the number of days the timeline shows."""
    try:
        first = date.fromisoformat(params["from"]) if params.get("from") else today - timedelta(days=1)
    except ValueError:
        raise BadRequest(f"from={params['from']!r}: expected a date like 2027-01-12") from None
    if not date(1970, 1, 1) <= first <= date(9000, 1, 1):
        raise BadRequest(f"from={params['from']!r}: expected a date between 1970 and 9000")
    days = params.get("days") or str(DEFAULT_DAYS)
    if not days.isdigit() or not 1 <= int(days) <= MAX_DAYS:
        raise BadRequest(f"days={days!r}: expected a whole number from 1 to {MAX_DAYS}")
    return first, int(days)
