"""Alert receivers on 127.0.0.1 for tests: a JSON webhook and an SMTP server (aiosmtpd).

Apprise URLs: `JsonReceiver.url` (json://127.0.0.1:PORT/alerts) and
`SmtpReceiver.url` (mailto://127.0.0.1:PORT?from=...&to=..., plain SMTP on loopback).
Both record what they got; `JsonReceiver(hang=True)` accepts the request and
never answers, like a webhook whose server is stuck.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from aiosmtpd.controller import Controller


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    receiver: JsonReceiver


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads `JsonReceiver.messages`."""

    def do_POST(self) -> None:
        receiver = cast(_Server, self.server).receiver
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        receiver.arrived.set()
        if receiver.hang:
            receiver.release.wait(60)
            return
        with receiver.lock:
            receiver.messages.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class JsonReceiver:
    """A webhook that records the JSON bodies Apprise's json:// posts ({"title", "message", ...})."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.receiver = self
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> JsonReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def texts(self) -> list[str]:
        """Title and body of each message, as one string."""
        with self.lock:
            return [f"{m.get('title', '')}\n{m.get('message', '')}" for m in self.messages]


class _Mailbox:
    def __init__(self, on_mail: Callable[[str], None]) -> None:
        self.on_mail = on_mail

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        part = message.get_body(preferencelist=("plain",)) if message.is_multipart() else message
        text = part.get_content() if part is not None else ""
        self.on_mail(f"{message['Subject']}\n{text}")
        return "250 OK"


class SmtpReceiver:
    """A local SMTP server (no TLS, no auth) recording subject and plain-text body of each mail."""

    def __init__(self) -> None:
        self.mails: list[str] = []
        self.lock = threading.Lock()
        with socket.socket() as probe:  # aiosmtpd cannot report the port it got for port 0
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(_Mailbox(self._got), hostname="127.0.0.1", port=self.port)
        self.url = f"mailto://127.0.0.1:{self.port}?from=oyez@example.org&to=comms@example.org"

    def _got(self, text: str) -> None:
        with self.lock:
            self.mails.append(text)

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def texts(self) -> list[str]:
        """Subject and body of each mail."""
        with self.lock:
            return list(self.mails)
