"""What the fake Mastodon, Bluesky and webhook servers share: a threaded HTTP server on
127.0.0.1 that records every request, routes it to the fake, and injects faults.

A fake subclasses `FakeServer` and implements `route(request) -> Reply`; `faulty(request)`
says which requests faults apply to (the ones that create posts). Faults follow
fakegraph's: `create=True` first handles the request normally (the post exists),
then answers with the fault.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlsplit

from fakegraph import _Server


@dataclass
class Request:
    """One request the server got; `status` is filled in once answered (0: dropped)."""

    at: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int = 0

    def json(self) -> Any:
        """The body as JSON, or None."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class Reply:
    """An answer: status, JSON body (or raw bytes) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"


@dataclass(frozen=True)
class Fault:
    """What to do to one faulty request instead of (or after, with `create`) handling it."""

    kind: Literal["timeout", "status", "drop"]
    create: bool = False
    seconds: float = 0.0
    status: int = 500
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def timeout(cls, seconds: float, create: bool = True) -> Fault:
        """Sleep before answering (the normal answer if created, else a 500)."""
        return cls("timeout", create=create, seconds=seconds)

    @classmethod
    def http_500(cls, create: bool = False) -> Fault:
        """HTTP 500; with `create` the post is made anyway."""
        return cls("status", create=create, status=500, body={"error": "InternalServerError",
                                                              "message": "Internal Server Error"})

    @classmethod
    def answer(cls, status: int, body: Any = None, **headers: str) -> Fault:
        """This status, body and headers, without handling the request."""
        return cls("status", status=status, body=body,
                   headers=tuple((k.replace("_", "-"), v) for k, v in headers.items()))

    @classmethod
    def drop(cls, create: bool = False) -> Fault:
        """Close the connection without an answer."""
        return cls("drop", create=create)


class FakeServer:
    """Serve `route` on 127.0.0.1; see the module docstring."""

    name = "fake"

    def __init__(self, seed: int = 0) -> None:
        self.url = ""
        self.received: list[Request] = []
        self.errors: list[str] = []  # tracebacks of bugs in the fake itself (should stay empty)
        self.lock = threading.Condition()
        self._queued: list[Fault] = []
        self._random_rate = 0.0
        self._random_faults: list[Fault] = []
        self._rng = random.Random(seed)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self.files: dict[str, tuple[bytes, str]] = {}  # path -> (bytes, type), served by GET

    # -- to implement --------------------------------------------------------------

    def route(self, request: Request) -> Reply:
        raise NotImplementedError

    def faulty(self, request: Request) -> bool:
        """Whether faults apply to this request (by default: every POST)."""
        return request.method == "POST"

    # -- lifecycle and test controls -------------------------------------------

    def __enter__(self) -> FakeServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self  # type: ignore[assignment]
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         name=self.name, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        server, self._server = self._server, None
        if server is not None:
            self._stopping.set()
            server.shutdown()
            server.close_connections(timeout=2.0)
            server.server_close()

    def fail_next(self, *faults: Fault) -> None:
        """Queue faults for the next faulty requests, first in first out."""
        with self.lock:
            self._queued.extend(faults)

    def fail_randomly(self, rate: float, faults: list[Fault]) -> None:
        """Fail each faulty request with probability `rate`, picking from `faults` (seeded)."""
        with self.lock:
            self._random_rate, self._random_faults = rate, list(faults)

    def serve_file(self, path: str, data: bytes, kind: str = "image/png") -> str:
        """Serve `data` at `path` (an image to upload); return its URL."""
        self.files[path] = (data, kind)
        return self.url + path

    def wait(self, check: Any, timeout: float) -> bool:
        """Block until `check()` (called under the lock) is true, or `timeout`."""
        with self.lock:
            return bool(self.lock.wait_for(check, timeout))

    def requests_to(self, path_part: str, method: str | None = None) -> list[Request]:
        """Requests whose path contains `path_part` (and with `method`, if given)."""
        with self.lock:
            return [r for r in self.received if path_part in r.path and method in (None, r.method)]

    # -- used by the handler ---------------------------------------------------------

    def _take_fault(self) -> Fault | None:
        with self.lock:
            if self._queued:
                return self._queued.pop(0)
            if self._random_rate > 0 and self._rng.random() < self._random_rate:
                return self._rng.choice(self._random_faults)
        return None

    def _pause(self, seconds: float) -> bool:
        return self._stopping.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `received`."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        fake = cast(FakeServer, cast(Any, self.server).fake)
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Request(time.time(), self.command, parts.path, dict(parse_qsl(parts.query)),
                          {k.lower(): v for k, v in self.headers.items()}, body)
        with fake.lock:
            fake.received.append(request)
            fake.lock.notify_all()
        try:
            if self.command == "GET" and parts.path in fake.files:
                data, kind = fake.files[parts.path]
                self._send(request, Reply(200, raw=data, content_type=kind))
                return
            fault = fake._take_fault() if fake.faulty(request) else None
            if fault is None:
                self._send(request, fake.route(request))
                return
            created = fake.route(request) if fault.create else None
            if fault.kind == "drop":
                self.close_connection = True
            elif fault.kind == "timeout":
                if not fake._pause(fault.seconds):
                    self._send(request, created or Reply(500, {"error": "InternalServerError"}))
            else:
                self._send(request, Reply(fault.status, fault.body, dict(fault.headers)))
        except OSError:
            self.close_connection = True
        except Exception:
            fake.errors.append(traceback.format_exc())
            self.close_connection = True

    def _send(self, request: Request, reply: Reply) -> None:
        data = reply.raw if reply.raw is not None else (
            b"" if reply.body is None else json.dumps(reply.body).encode())
        request.status = reply.status
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(data)


def multipart(request: Request) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by field name."""
    import email.parser
    import email.policy

    head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body)
    return {str(part.get_param("name", header="content-disposition")): part.get_payload(decode=True)
            for part in message.iter_parts()}
