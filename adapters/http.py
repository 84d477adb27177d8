"""The one way adapters talk HTTP: a configured Session and bounded, typed calls.

Every call has a timeout, follows no redirects, verifies TLS, reads at most
MAX_BODY bytes within the read timeout, and turns transport failures into
TransientError/PermanentError. Nothing retries here: a POST that reached the
server may have created the post, so retrying is the caller's decision.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.auth
import urllib3
from pydantic import SecretStr
from requests.adapters import HTTPAdapter

from scheduler.errors import AuthError, PermanentError, PublishError, TransientError
from scheduler.secrets import redact

MAX_BODY = 1024 * 1024
MAX_WAIT = 86400.0  # the longest wait a server may ask for; beyond it a post's grace is long gone
USER_AGENT = "oyez/0.1 (+scheduled social posts)"
Files = dict[str, tuple[str, bytes, str]]  # multipart field -> (file name, bytes, content type)


def check_base_url(url: str, name: str = "url") -> str:
    """Accept https URLs, and http only for loopback test servers; raise ValueError."""
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(f"{name} must be https (http only for localhost), got {url!r}")
    if not parts.hostname or "?" in url or "#" in url or "@" in parts.netloc:
        raise ValueError(f"{name} must be a plain base URL, got {url!r}")
    return url.rstrip("/")


def session(pool_size: int = 32) -> requests.Session:
    """A Session with our User-Agent, pooled connections and no automatic retries."""
    http = requests.Session()
    http.headers["User-Agent"] = USER_AGENT
    plain = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    http.mount("http://", plain)
    http.mount("https://", plain)
    return http


@dataclass(frozen=True)
class Response:
    """A complete, size-checked HTTP response."""

    status: int
    headers: requests.structures.CaseInsensitiveDict[str]
    body: Any  # parsed JSON, or None when the body was not JSON
    content: bytes = b""  # the raw body (at most MAX_BODY bytes)

    def header_json(self, name: str) -> Any:
        """Parse a JSON-valued header, or None if absent or malformed."""
        try:
            return json.loads(self.headers.get(name, ""))
        except (ValueError, RecursionError):
            return None


class BearerAuth(requests.auth.AuthBase):
    """`Authorization: Bearer <token>`; the token never goes into a URL or a log.

    Passing it as requests' `auth` also spares a ~/.netrc lookup on every request.
    """

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        return request


def call(http: requests.Session, method: str, url: str, *, timeout: float,
         data: dict[str, str] | bytes | None = None, params: dict[str, str] | None = None,
         auth: requests.auth.AuthBase | None = None, json_body: Any = None,
         files: Files | None = None, headers: dict[str, str] | None = None) -> Response:
    """Make one request. Raises TransientError (ambiguous when the server may have acted).

    The body is `data` (form fields or raw bytes), `json_body` or multipart `files`
    (with `data` as its other fields).
    """
    what = f"{method} {redact(url)}"
    may_have_acted = method != "GET"
    try:
        resp = http.request(method, url, data=data, params=params, auth=auth, json=json_body,
                            files=files, headers=headers,
                            timeout=(min(timeout, 5.0), timeout), allow_redirects=False,
                            stream=True, verify=True)
    except requests.exceptions.SSLError:
        raise PermanentError(f"{what}: TLS certificate verification failed") from None
    except requests.exceptions.ConnectTimeout:
        raise TransientError(f"{what}: connection timed out") from None
    except requests.exceptions.ReadTimeout:
        raise TransientError(f"{what}: no response within {timeout:g}s",
                             ambiguous=may_have_acted) from None
    except requests.exceptions.ConnectionError as exc:
        refused = "NewConnectionError" in repr(exc) or "Connection refused" in repr(exc)
        raise TransientError(f"{what}: connection failed ({type(exc).__name__})",
                             ambiguous=may_have_acted and not refused) from None
    except requests.exceptions.RequestException as exc:
        raise PermanentError(f"{what}: {type(exc).__name__}") from None
    with resp:
        if 300 <= resp.status_code < 400:
            location = redact(resp.headers.get("Location", "?"))
            raise PermanentError(f"{what}: unexpected redirect ({resp.status_code}) to {location}")
        raw = _read_bounded(resp, what, timeout, may_have_acted)
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # not JSON, or nested deep enough to be hostile
        body = None
    return Response(resp.status_code, resp.headers, body, raw)


def download(http: requests.Session, url: str, *, timeout: float) -> tuple[bytes, str]:
    """Fetch an image (or any file) for upload: (bytes, content type). Raises like `call`.

    A 4xx means the file is not there (PermanentError); 5xx is worth retrying.
    """
    resp = call(http, "GET", url, timeout=timeout)
    if resp.status >= 500:
        raise TransientError(f"GET {redact(url)}: HTTP {resp.status}", status=resp.status)
    if resp.status != 200 or not resp.content:
        raise PermanentError(f"GET {redact(url)}: HTTP {resp.status}, no file to upload",
                             status=resp.status)
    kind = resp.headers.get("Content-Type", "").split(";")[0].strip() or "application/octet-stream"
    return resp.content, kind


def _read_bounded(resp: requests.Response, what: str, timeout: float, ambiguous: bool) -> bytes:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := resp.raw.read1(16384):  # returns what has arrived, so a drip can't stall us
            size += len(chunk)
            if size > MAX_BODY:
                raise TransientError(f"{what}: response larger than {MAX_BODY} bytes",
                                     status=resp.status_code, ambiguous=ambiguous)
            if time.monotonic() > deadline:
                raise TransientError(f"{what}: response still arriving after {timeout:g}s",
                                     status=resp.status_code, ambiguous=ambiguous)
            chunks.append(chunk)
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransientError(f"{what}: response broken off ({type(exc).__name__})",
                             status=resp.status_code, ambiguous=ambiguous) from None
    return b"".join(chunks)


def status_error(status: int, detail: str, *, ambiguous: bool, retry_after: float | None = None,
                 auth: bool = False) -> PublishError:
    """The error for an API whose HTTP status carries the meaning.

    401 (or `auth`) → AuthError; 408, 425, 429 and 5xx → TransientError
    (ambiguous for a 5xx answer to a call that may have acted); a 2xx the caller
    could not read → TransientError (ambiguous likewise); anything else →
    PermanentError.
    """
    if status < 300:
        return TransientError(f"{detail} (an answer that could not be read)", status=status,
                              ambiguous=ambiguous)
    if auth or status == 401:
        return AuthError(detail, status=status)
    if status in (408, 425, 429) or status >= 500:
        return TransientError(detail, status=status, retry_after=retry_after,
                              ambiguous=ambiguous and status >= 500)
    return PermanentError(detail, status=status)


def wait_seconds(resp: Response, *, reset_header: str | None = None) -> float | None:
    """Seconds the server asks us to wait: `Retry-After`, else the rate-limit reset header.

    A reset may be unix seconds or an ISO 8601 instant (Mastodon); it is measured
    against the server's `Date` when there is one, so clock skew does not count.
    The answer is capped at MAX_WAIT; None when nothing usable was sent.
    """
    after = resp.headers.get("Retry-After", "").strip()
    if after.isdigit() and len(after) < 10:
        return min(float(after), MAX_WAIT)
    value = resp.headers.get(reset_header, "").strip() if reset_header else ""
    if not value or len(value) > 40:
        return None
    try:
        reset = (datetime.fromtimestamp(float(value), UTC) if value.replace(".", "", 1).isdigit()
                 else datetime.fromisoformat(value))
        if reset.tzinfo is None:
            reset = reset.replace(tzinfo=UTC)
        server_date = resp.headers.get("Date")
        now = email.utils.parsedate_to_datetime(server_date) if server_date else datetime.now(UTC)
        wait = (reset - now).total_seconds()
    except (ValueError, TypeError, OverflowError, OSError):  # naive Date, absurd year, ...
        return None
    return min(max(wait, 0.0), MAX_WAIT)
