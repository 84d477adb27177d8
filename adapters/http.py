"""The one way adapters talk HTTP: a configured Session and bounded, typed calls.

Every call has a timeout, follows no redirects, verifies TLS, reads at most
MAX_BODY bytes within the read timeout, and turns transport failures into
TransientError/PermanentError. Nothing retries here: a POST that reached the
server may have created the post, so retrying is the caller's decision.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import requests
import requests.auth
import urllib3
from pydantic import SecretStr
from requests.adapters import HTTPAdapter

from scheduler.errors import PermanentError, TransientError
from scheduler.secrets import redact

MAX_BODY = 1024 * 1024
USER_AGENT = "oyez/0.1 (+scheduled social posts)"


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
         data: dict[str, str] | None = None, params: dict[str, str] | None = None,
         auth: BearerAuth | None = None) -> Response:
    """Make one request. Raises TransientError (ambiguous when the server may have acted)."""
    what = f"{method} {redact(url)}"
    may_have_acted = method != "GET"
    try:
        resp = http.request(method, url, data=data, params=params, auth=auth,
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
    return Response(resp.status_code, resp.headers, body)


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
