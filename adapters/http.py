"""The one way adapters talk HTTP: a configured Session and bounded, typed calls.

Every call has a timeout, follows no redirects, verifies TLS, reads at most
MAX_BODY bytes within the read timeout, and turns transport failures into
TransientError/PermanentError. Nothing retries here: a POST that reached the
server may have created the post, so retrying is the caller's decision.
"""

from __future__ import annotations

import email.utils
import functools
import json
import os
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
import requests.utils
import urllib3
import urllib3.connectionpool
from pydantic import SecretStr
from requests.adapters import HTTPAdapter

from scheduler.errors import AuthError, PermanentError, PublishError, TransientError
from scheduler.secrets import redact

MAX_BODY = 1024 * 1024
MAX_WAIT = 86400.0  # the longest wait a server may ask for; beyond it a post's grace is long gone
USER_AGENT = "oyez/0.1 (+scheduled social posts)"
CA_BUNDLE_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # what requests reads besides proxies
Files = dict[str, tuple[str, bytes, str]]  # multipart field -> (file name, bytes, content type)


def timeout() -> float:
    """Seconds an adapter's calls may take (OYEZ_HTTP_TIMEOUT, default 20)."""
    return float(os.environ.get("OYEZ_HTTP_TIMEOUT") or 20)


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
    """A Session with our User-Agent, pooled connections and no automatic retries.

    The CA bundle the environment names (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) is
    read once, here; where it sets no proxy, requests is told not to look in the
    environment again: it would scan every variable on every request (a third of
    a post's CPU time in a burst). With a proxy set, requests reads it as usual.
    """
    http = requests.Session()
    http.headers["User-Agent"] = USER_AGENT
    http.verify = next((os.environ[name] for name in CA_BUNDLE_VARS if os.environ.get(name)), True)
    http.trust_env = any(name.lower().endswith("_proxy") for name in os.environ)
    plain = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    http.mount("http://", plain)
    http.mount("https://", plain)
    return http


@dataclass(frozen=True)
class Response:
    """A complete, size-checked HTTP response."""

    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: Any  # parsed JSON, or None when the body was not JSON
    content: bytes = b""  # the raw body (at most MAX_BODY bytes)

    def header_json(self, name: str) -> Any:
        """Parse a JSON-valued header, or None if absent or malformed."""
        try:
            return json.loads(self.headers.get(name, ""))
        except (ValueError, RecursionError):
            return None


class BearerAuth:
    """`Authorization: Bearer <token>`; the token never goes into a URL or a log."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def header(self) -> str:
        """The Authorization header's value."""
        return f"Bearer {self._token.get_secret_value()}"


def call(http: requests.Session, method: str, url: str, *, timeout: float,
         data: dict[str, str] | bytes | None = None, params: dict[str, str] | None = None,
         auth: BearerAuth | None = None, json_body: Any = None,
         files: Files | None = None, headers: dict[str, str] | None = None) -> Response:
    """Make one request. Raises TransientError (ambiguous when the server may have acted).

    The body is `data` (form fields or raw bytes), `json_body` or multipart `files`
    (with `data` as its other fields). The request goes straight to urllib3
    through `http`'s connection pools (and its proxies, CA bundle and headers):
    requests' own request and response handling cost more than half of a post's
    CPU time in a burst, for cookies, hooks and redirects that oyez never uses.
    """
    what = f"{method} {redact(url)}"
    may_have_acted = method != "GET"
    if params:
        url += ("&" if "?" in url else "?") + urlencode(params)
    fields = {k: v.decode() if isinstance(v, bytes) else v for k, v in http.headers.items()}
    fields.update({"Accept-Encoding": "identity", **(headers or {})})  # replies are small JSON
    body, kind = _body(data, json_body, files)
    if kind:
        fields["Content-Type"] = kind
    if auth is not None:
        fields["Authorization"] = auth.header()
    try:
        pool, target = _pool(http, url)
        resp = pool.urlopen(method, target, body=body, headers=fields, redirect=False,
                            assert_same_host=False, retries=False, preload_content=False,
                            decode_content=False,
                            timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout))
    except urllib3.exceptions.SSLError:
        raise PermanentError(f"{what}: TLS certificate verification failed") from None
    except urllib3.exceptions.NewConnectionError:  # refused, unreachable: nothing was sent
        raise TransientError(f"{what}: connection failed (NewConnectionError)") from None
    except urllib3.exceptions.ConnectTimeoutError:
        raise TransientError(f"{what}: connection timed out") from None
    except urllib3.exceptions.ReadTimeoutError:
        raise TransientError(f"{what}: no response within {timeout:g}s",
                             ambiguous=may_have_acted) from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ProxyError, OSError) as exc:
        raise TransientError(f"{what}: connection failed ({type(exc).__name__})",
                             ambiguous=may_have_acted) from None
    except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, ValueError) as exc:
        raise PermanentError(f"{what}: {type(exc).__name__}") from None
    complete = False
    try:
        if 300 <= resp.status < 400:
            location = redact(resp.headers.get("Location", "?"))
            raise PermanentError(f"{what}: unexpected redirect ({resp.status}) to {location}")
        raw = _read_bounded(resp, what, timeout, may_have_acted)
        complete = True
    finally:
        if not complete:  # the connection is not reused with a reply half read
            resp.close()
        resp.release_conn()
    try:
        parsed = json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # not JSON, or nested deep enough to be hostile
        parsed = None
    return Response(resp.status, resp.headers, parsed, raw)


def _body(data: dict[str, str] | bytes | None, json_body: Any,
          files: Files | None) -> tuple[bytes | None, str | None]:
    """The request body and its Content-Type, encoded as requests would."""
    if files is not None:
        fields: list[tuple[str, str | tuple[str, bytes, str]]] = [
            *(data.items() if isinstance(data, dict) else ()), *files.items()]
        return urllib3.encode_multipart_formdata(fields)
    if json_body is not None:
        return json.dumps(json_body, allow_nan=False).encode(), "application/json"
    if isinstance(data, dict):
        return urlencode(data).encode(), "application/x-www-form-urlencoded"
    return data, None


def _pool(http: requests.Session, url: str) -> tuple[urllib3.connectionpool.HTTPConnectionPool, str]:
    """`http`'s pooled connections to `url`'s host (through its proxy, if one applies), and
    the target to ask them for. TLS is always verified, against `http.verify` if it names a
    CA bundle."""
    adapter = http.get_adapter(url)
    if not isinstance(adapter, HTTPAdapter):
        raise requests.exceptions.InvalidSchema(url)
    proxies = {**(requests.utils.get_environ_proxies(url) if http.trust_env else {}), **http.proxies}
    proxy = requests.utils.select_proxy(url, proxies) if proxies else None
    manager = adapter.proxy_manager_for(proxy) if proxy else adapter.poolmanager
    ca = http.verify if isinstance(http.verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
    parts = urlsplit(url)
    # looked up once per host: urllib3 parses and normalises the URL on every lookup, a
    # sixth of a post's time from its instant to the wire
    known = _POOLS.setdefault(manager, {})
    pool = known.get((parts.scheme, parts.netloc, ca))
    if pool is None or pool.pool is None:  # new, or closed (its manager let it go)
        pool = known[parts.scheme, parts.netloc, ca] = manager.connection_from_url(
            url, pool_kwargs=_tls(ca))
    target = url if proxy and parts.scheme == "http" else (parts.path or "/") + (
        f"?{parts.query}" if parts.query else "")
    return pool, target


_POOLS: weakref.WeakKeyDictionary[urllib3.PoolManager, dict[tuple[str, str, str], Any]] = \
    weakref.WeakKeyDictionary()  # manager -> (scheme, host, CA) -> its connection pool


@functools.cache
def _tls(ca: str) -> dict[str, str]:
    """Pool settings that verify certificates against CA bundle (file or folder) `ca`."""
    return {"cert_reqs": "CERT_REQUIRED", ("ca_cert_dir" if os.path.isdir(ca) else "ca_certs"): ca}


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


def _read_bounded(resp: urllib3.BaseHTTPResponse, what: str, timeout: float, ambiguous: bool) -> bytes:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := resp.read1(16384):  # returns what has arrived, so a drip can't stall us
            size += len(chunk)
            if size > MAX_BODY:
                raise TransientError(f"{what}: response larger than {MAX_BODY} bytes",
                                     status=resp.status, ambiguous=ambiguous)
            if time.monotonic() > deadline:
                raise TransientError(f"{what}: response still arriving after {timeout:g}s",
                                     status=resp.status, ambiguous=ambiguous)
            chunks.append(chunk)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransientError(f"{what}: response broken off ({type(exc).__name__})",
                             status=resp.status, ambiguous=ambiguous) from None
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
