"""Hostile answers, bad TLS, bad base URLs and secret redaction: typed errors, never hangs or leaks."""

from __future__ import annotations

import io
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests
import trustme
from conftest import TOKEN
from fakegraph import FakeGraph, Fault
from pydantic import SecretStr

from adapters import http as web
from adapters.base import Message, PermanentError, TransientError
from adapters.facebook import FacebookPage, FacebookPageSettings
from adapters.http import check_base_url
from scheduler import secrets

PAGE = "111"
TIMEOUT = 1.0  # OYEZ_HTTP_TIMEOUT for these tests
QUICK = 3.0  # a hostile answer must be given up on within this many seconds
Call = Callable[[FacebookPage], object]


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with web.session() as session:
        yield session


@pytest.fixture
def make_page(http: requests.Session, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], FacebookPage]:
    """Build the adapter for page 111 at a base URL, with a 1 s HTTP timeout."""
    monkeypatch.setenv("OYEZ_HTTP_TIMEOUT", f"{TIMEOUT:g}")
    monkeypatch.delenv("FB_GRAPH_VERSION", raising=False)

    def make(base_url: str) -> FacebookPage:
        settings = FacebookPageSettings(page_id=PAGE, access_token=TOKEN, graph_url=base_url)
        return FacebookPage(settings, http)

    return make


@pytest.fixture
def page(graph: FakeGraph, make_page: Callable[[str], FacebookPage]) -> FacebookPage:
    return make_page(graph.url)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the test its own copy of the process-global secret registry."""
    monkeypatch.setattr(secrets, "_secrets", set(secrets._secrets))


def publish_quickly(page: FacebookPage, error: type[Exception]) -> pytest.ExceptionInfo[Exception]:
    """Publish, expect `error`, and check it came within QUICK seconds."""
    start = time.monotonic()
    with pytest.raises(error) as info:
        page.publish(Message("hostile"))
    assert time.monotonic() - start < QUICK
    return info


# -- hostile answers to a POST --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "created"),
    [
        pytest.param(Fault.huge_body(2 * 1024 * 1024), False, id="huge-body"),
        pytest.param(Fault.slow_drip(5), True, id="slow-drip"),
        pytest.param(Fault.non_json(), False, id="non-json-200"),
        pytest.param(Fault.timeout(5, create=True), True, id="no-answer"),
        pytest.param(Fault.drop(create=True), True, id="dropped"),
    ],
)
def test_hostile_answer_is_an_ambiguous_transient_error(graph: FakeGraph, page: FacebookPage,
                                                        fault: Fault, created: bool) -> None:
    graph.fail_next(fault)
    info = publish_quickly(page, TransientError)
    assert isinstance(info.value, TransientError)
    # The server may have acted on the POST: the caller must look before posting again.
    assert info.value.ambiguous
    assert len(graph.posts) == int(created)


@pytest.mark.parametrize(("nbytes", "ok"), [(web.MAX_BODY, True), (web.MAX_BODY + 1, False)])
def test_body_limit_is_exactly_max_body(graph: FakeGraph, page: FacebookPage, nbytes: int,
                                        ok: bool) -> None:
    graph.fail_next(Fault.huge_body(nbytes))
    if ok:
        assert page.publish(Message("big but fine")).remote_id == "1"
    else:
        with pytest.raises(TransientError, match="larger than"):
            page.publish(Message("too big"))


def test_slow_drip_is_cut_at_the_timeout_through_call(graph: FakeGraph, http: requests.Session) -> None:
    graph.fail_next(Fault.slow_drip(5))
    start = time.monotonic()
    with pytest.raises(TransientError, match="still arriving") as info:
        web.call(http, "POST", f"{graph.base_url}/{PAGE}/feed", timeout=1,
                 data={"message": "drip"}, auth=web.BearerAuth(SecretStr(TOKEN)))
    assert time.monotonic() - start < QUICK
    assert info.value.ambiguous and info.value.status == 200


def test_redirect_to_another_host_is_permanent_and_not_followed(graph: FakeGraph, page: FacebookPage,
                                                                registry: None) -> None:
    secrets.register(TOKEN)
    with FakeGraph({PAGE: TOKEN}) as other:
        graph.fail_next(Fault.redirect(f"{other.base_url}/{PAGE}/feed?access_token={TOKEN}"))
        with pytest.raises(PermanentError, match="redirect") as info:
            page.publish(Message("elsewhere"))
        assert other.received == []
        assert other.posts == graph.posts == []
    assert f"{other.base_url}/{PAGE}/feed" in str(info.value)
    assert TOKEN not in str(info.value)


# -- transport failures ---------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("call", [
    pytest.param(lambda p: p.publish(Message("x")), id="POST"),
    pytest.param(lambda p: p.check(), id="GET"),
])
def test_connection_refused_is_transient_and_not_ambiguous(make_page: Callable[[str], FacebookPage],
                                                           call: Call) -> None:
    page = make_page(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(TransientError) as info:
        call(page)
    assert not info.value.ambiguous  # nothing reached a server, so nothing was created


@dataclass
class TLSServer:
    url: str
    ca: trustme.CA
    paths: list[str]  # request paths the server answered


@pytest.fixture
def tls_server() -> Iterator[TLSServer]:
    """An https server on 127.0.0.1 whose certificate is signed by a CA nobody trusts."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            paths.append(self.path)
            body = b'{"id": "111", "name": "Impostor"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield TLSServer(f"https://127.0.0.1:{server.server_address[1]}", ca, paths)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_tls_server_works_for_a_client_that_trusts_its_ca(tls_server: TLSServer) -> None:
    """Control: the server is sound, so the failure below is certificate verification."""
    with tls_server.ca.cert_pem.tempfile() as ca_file, requests.Session() as session:
        assert session.get(f"{tls_server.url}/me", verify=ca_file, timeout=5).status_code == 200
    assert tls_server.paths == ["/me"]


@pytest.mark.parametrize("call", [
    pytest.param(lambda p: p.publish(Message("x")), id="POST"),
    pytest.param(lambda p: p.check(), id="GET"),
])
def test_untrusted_certificate_is_permanent(tls_server: TLSServer, make_page: Callable[[str], FacebookPage],
                                            call: Call) -> None:
    page = make_page(tls_server.url)
    with pytest.raises(PermanentError, match="TLS certificate verification failed"):
        call(page)
    assert tls_server.paths == []  # nothing, token included, was sent to the impostor


# -- base URLs ------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "expected"), [
    ("https://graph.facebook.com", "https://graph.facebook.com"),
    ("https://graph.facebook.com/", "https://graph.facebook.com"),
    ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
    ("http://localhost", "http://localhost"),
    ("http://[::1]:8123", "http://[::1]:8123"),
])
def test_check_base_url_accepts(url: str, expected: str) -> None:
    assert check_base_url(url) == expected


@pytest.mark.parametrize("url", [
    "http://example.org",
    "http://graph.facebook.com",
    "http://127.0.0.1.example.org",
    "http://localhost.example.org:80",
    "ftp://graph.facebook.com",
    "file:///etc/passwd",
    "graph.facebook.com",
    "https://",
    "https://user:pw@graph.facebook.com",
    "https://user@graph.facebook.com",
    "http://user:pw@127.0.0.1:8123",
    "https://graph.facebook.com?access_token=x",
    "https://graph.facebook.com/?debug=all",
    "https://:pw@graph.facebook.com",
    "https://graph.facebook.com?",
    "https://graph.facebook.com#frag",
])
def test_check_base_url_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="graph_url"):
        check_base_url(url, "graph_url")


def test_settings_reject_a_bad_graph_url() -> None:
    with pytest.raises(ValueError, match="graph_url"):
        FacebookPageSettings(page_id=PAGE, access_token=TOKEN, graph_url="http://example.org")


# -- redaction ------------------------------------------------------------------------------

SECRET = "EAAB-REDACT-ME-0123456789"


def test_redact_masks_every_occurrence(registry: None) -> None:
    assert secrets.redact(f"a {SECRET} b {SECRET}") == f"a {SECRET} b {SECRET}"  # not yet a secret
    secrets.register(SECRET)
    assert secrets.redact(f"a {SECRET} b {SECRET}") == f"a {secrets.MASK} b {secrets.MASK}"


def test_redact_masks_the_longer_of_overlapping_secrets_whole(registry: None) -> None:
    secrets.register(SECRET)
    secrets.register(SECRET + "-EXTENDED")
    assert secrets.redact(f"{SECRET}-EXTENDED and {SECRET}") == f"{secrets.MASK} and {secrets.MASK}"


def test_logging_filter_masks_args_and_exception_text(registry: None) -> None:
    secrets.register(SECRET)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(secrets.RedactingFilter())
    logger = logging.getLogger("oyez-test-redaction")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"token {SECRET} rejected")
        except RuntimeError:
            logger.exception("publishing with %s failed", SECRET)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    output = stream.getvalue()
    assert SECRET not in output
    assert output.startswith(f"ERROR publishing with {secrets.MASK} failed")
    assert f"RuntimeError: token {secrets.MASK} rejected" in output  # the traceback is kept, masked
