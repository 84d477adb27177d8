"""The web page (`oyez web`, `oyez run --http`): a read-only view of the ledger and jobs.yaml.

An edge like the CLI: it calls the functions of `scheduler.report` that `oyez
plan`, `history` and `status` use, so the page and the terminal cannot disagree.
It is served by the standard library's threaded WSGI server: a handful of
people and one Prometheus scrape, behind the team's reverse proxy if shared.

Private by default: it listens on loopback unless told otherwise, and on any
other address it refuses to start without OYEZ_WEB_TOKEN, which it then asks
for (see `app.App`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .. import clock
from ..errors import OyezError
from ..secrets import register
from ..settings import Settings
from .app import App

log = logging.getLogger(__name__)

DEFAULT_BIND = "127.0.0.1:8080"


def parse_bind(bind: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:8080`) → (host, port); OyezError if malformed."""
    host, sep, port = bind.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise OyezError(f"--bind {bind!r}: expected HOST:PORT, e.g. {DEFAULT_BIND}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # an open connection never holds up the process's exit
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer's version looks the host up in DNS (getfqdn), which can stall for seconds
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])
        self.setup_environ()


class _Handler(WSGIRequestHandler):
    timeout = 30  # a client that stalls mid-request gives its thread back

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def address_string(self) -> str:
        return str(self.client_address[0])


class WebServer:
    """The page's HTTP server: bound on creation (errors are OyezError), served by `run`/`start`."""

    def __init__(self, config_path: str, settings: Settings, bind: str = DEFAULT_BIND,
                 now: Callable[[], datetime] = clock.now) -> None:
        host, port = parse_bind(bind)
        token = settings.web_token.get_secret_value() if settings.web_token else None
        if token is None and not is_loopback(host):
            raise OyezError(f"refusing to serve the page on {bind} without OYEZ_WEB_TOKEN: it shows "
                            "embargoed posts. Set OYEZ_WEB_TOKEN (see .env.example), or bind to "
                            "127.0.0.1 and put a reverse proxy in front")
        if token is not None:
            register(token)
        server_class = type("Server", (_Server,), {
            "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self.httpd = server_class((host, port), _Handler)
        except OSError as exc:
            raise OyezError(f"cannot serve the page on {bind}: {exc.strerror or exc}") from None
        self.app = App(config_path, settings.db, token, now)
        self.httpd.set_app(self.app)
        self._thread: threading.Thread | None = None
        bound = self.httpd.server_address
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
        self.url = f"http://{shown}:{bound[1]}/"

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT (for `oyez web`); return the exit status."""
        def stop(_signum: int, _frame: FrameType | None) -> None:
            # shutdown() waits for serve_forever, which runs in this very thread
            threading.Thread(target=self.httpd.shutdown).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("serving the oyez page on %s (read-only%s)", self.url,
                 ", token required" if self.app.token else "")
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()
        log.info("stopped serving the page")
        return 0

    def start(self) -> None:
        """Serve from a background thread (inside the daemon)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="oyez-web", daemon=True)
        self._thread.start()
        log.info("serving the oyez page on %s (read-only)", self.url)

    def stop(self) -> None:
        """Stop a `start`ed server and close its socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)


@contextlib.contextmanager
def serving(config_path: str, settings: Settings, bind: str | None) -> Iterator[None]:
    """Serve the page from a thread for the duration of the block (nothing if `bind` is None)."""
    if bind is None:
        yield
        return
    server = WebServer(config_path, settings, bind)
    server.start()
    try:
        yield
    finally:
        server.stop()
