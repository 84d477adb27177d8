"""Telling a person: incidents raised by the daemon go out through Apprise, once each.

`Alerts.raise_` and `Alerts.resolve` only write the incident to the ledger
(see scheduler/incidents.py) and wake the alert thread; they never wait for
a channel. The alert thread gathers a burst for `alert_batch_seconds`, claims
the unsent alerts (one daemon wins each), and sends one message for the lot
to every channel in `alerts:` of jobs.yaml, each channel in its own thread
with a bounded wait. A channel that fails or hangs is logged, not retried:
publishing never waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from pydantic import SecretStr

from . import clock
from .secrets import redact

if TYPE_CHECKING:  # the ledger is imported only by the daemon, not by `oyez validate`
    from .incidents import Claimed, Incidents
    from .ledger import Incident

log = logging.getLogger(__name__)

FAILED, MISSED, UNHEALTHY, RELOAD, TOKEN, ABANDONED = (
    "failed", "missed", "unhealthy", "reload", "token", "abandoned")
HEADLINES = {
    FAILED: "post failed",
    MISSED: "post missed",
    UNHEALTHY: "target unhealthy (its token was refused; its posts are held)",
    RELOAD: "jobs.yaml rejected (the daemon keeps running the last good one)",
    TOKEN: "token needs attention",
    ABANDONED: "a post was abandoned mid-send by a daemon that stopped",
}
LISTED = 10  # incidents of one kind listed by name in one message; the rest are counted


def url_problem(url: str) -> str | None:
    """Why Apprise cannot use `url`, naming only its scheme; None if it can."""
    import apprise

    with quiet_apprise():
        plugin = apprise.Apprise.instantiate(url)
    if plugin is not None:
        return None
    return (f"not a notification URL Apprise can use (scheme {scheme(SecretStr(url))!r}; "
            "see https://github.com/caronc/apprise/wiki for the URL of each service)")


@contextlib.contextmanager
def quiet_apprise() -> Iterator[None]:
    """Apprise logs the URLs it cannot parse, secrets and all: silence it meanwhile."""
    logger = logging.getLogger("apprise")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def send(urls: Sequence[SecretStr], title: str, body: str, timeout: float,
         level: str = "info") -> list[bool]:
    """Send one message to each URL at once; wait at most `timeout` s; True where it went out.

    `level` is Apprise's notify type (info, success, warning, failure): some channels colour it.
    """
    import apprise

    results = [False] * len(urls)

    def one(i: int) -> None:
        channel = apprise.Apprise()
        channel.add(urls[i].get_secret_value())
        results[i] = bool(channel.notify(title=title, body=body, body_format=apprise.NotifyFormat.TEXT,
                                           notify_type=level))

    threads = [threading.Thread(target=one, args=(i,), name=f"oyez-alert-{i}", daemon=True)
               for i in range(len(urls))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for i, thread in enumerate(threads):
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():  # a hanging channel: it is a daemon thread, left to time out alone
            log.error("alert channel %d (%s) did not answer within %gs", i + 1, scheme(urls[i]), timeout)
    for i, ok in enumerate(results):
        if not ok and not threads[i].is_alive():
            log.error("alert channel %d (%s) refused or failed the alert", i + 1, scheme(urls[i]))
    return results


def scheme(url: SecretStr) -> str:
    """The part of a notification URL that may be shown: its scheme."""
    head, sep, _ = url.get_secret_value().partition("://")
    return head if sep and head.isalnum() and len(head) < 32 else "(none)"


def compose(claimed: Claimed, node: str) -> tuple[str, str]:
    """Title and body of one message for every alert in `claimed`.

    Each incident is one line starting `PROBLEM [key]` or `RESOLVED [key]`;
    beyond LISTED of one kind, the rest are counted, not listed.
    """
    lines: list[str] = []
    by_kind: dict[str, list[Incident]] = defaultdict(list)
    for incident in claimed.opened:
        by_kind[incident.kind].append(incident)
    for kind, incidents in by_kind.items():
        for incident in incidents[:LISTED]:
            seen = f" (seen {incident.count} times)" if incident.count > 1 else ""
            lines.append(f"PROBLEM [{incident.key}] {HEADLINES.get(kind, kind)}{seen}")
            lines += [f"    {line}" for line in incident.detail.splitlines()]
        if len(incidents) > LISTED:
            lines.append(f"... and {len(incidents) - LISTED} more: {HEADLINES.get(kind, kind)}")
    for incident in claimed.resolved:
        if incident.resolution != "event":
            lines.append(f"RESOLVED [{incident.key}] {incident.resolution}")
    problems = len(claimed.opened)
    resolved = sum(i.resolution != "event" for i in claimed.resolved)
    if problems == 1 and not resolved:
        only = claimed.opened[0]
        title = f"oyez: {HEADLINES.get(only.kind, only.kind).split(' (')[0]}: {only.subject}"
    elif resolved == 1 and not problems:
        only = claimed.resolved[0]
        title = f"oyez: resolved: {only.subject}: {only.resolution}"
    else:
        title = f"oyez: {problems} problem{'s' * (problems != 1)}, {resolved} resolved"
    lines.append(f"-- oyez on {socket.gethostname()} (node {node})")
    return redact(title), redact("\n".join(lines))


class Alerts:
    """Raises and resolves incidents, and runs the thread that sends their alerts."""

    def __init__(self, incidents: Incidents | None, node: str, *, batch_seconds: float,
                 poll_seconds: float, timeout: float) -> None:
        """`incidents` None (a dry run) makes every call a no-op."""
        self.incidents = incidents
        self.node = node
        self.batch_seconds = batch_seconds
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.urls: tuple[SecretStr, ...] = ()
        self._open: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def use(self, urls: tuple[SecretStr, ...]) -> None:
        """Send to these channels from now on (from the running jobs.yaml)."""
        self.urls = urls

    def raise_(self, kind: str, subject: str, detail: str, *, event: bool = False) -> None:
        """Record incident `kind:subject`; the first time, an alert goes out. Never raises."""
        if self.incidents is None:
            return
        try:
            opened = self.incidents.open(kind, subject, redact(detail), clock.now(), event=event)
        except Exception:  # a full disk must not stop a post from being recorded
            log.exception("could not record incident %s:%s", kind, subject)
            return
        if not event:
            self._open.add(f"{kind}:{subject}")
        if opened:
            log.info("incident opened: %s:%s", kind, subject)
            self._wake.set()

    def resolve(self, kind: str, subject: str, resolution: str) -> None:
        """Close incident `kind:subject` if it is open (cheap when it is not). Never raises."""
        key = f"{kind}:{subject}"
        if self.incidents is None or key not in self._open:
            return
        self._open.discard(key)
        try:
            closed = self.incidents.resolve(kind, subject, resolution, clock.now())
        except Exception:
            log.exception("could not resolve incident %s", key)
            return
        if closed:
            log.info("incident resolved: %s (%s)", key, resolution)
            self._wake.set()

    def start(self) -> None:
        """Load the open incidents and start the alert thread."""
        if self.incidents is None:
            return
        self._open = {i.key for i in self.incidents.still_open()}
        self._thread = threading.Thread(target=self._run, name="oyez-alerts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the alert thread (an alert being sent is abandoned after its timeout)."""
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        assert self.incidents is not None
        while not self._stop.is_set():
            woken = self._wake.wait(self.poll_seconds)
            if self._stop.is_set():
                return
            if woken and self._stop.wait(self.batch_seconds):  # let a burst gather
                return
            self._wake.clear()
            try:
                self._open = {i.key for i in self.incidents.still_open()}  # incl. those other daemons opened
                claimed = self.incidents.claim(self.node, clock.now())
            except Exception:
                log.exception("could not read incidents; trying again in %gs", self.poll_seconds)
                continue
            if claimed.opened or claimed.resolved:
                self._send(claimed)

    def _send(self, claimed: Claimed) -> None:
        title, body = compose(claimed, self.node)
        if not self.urls:
            log.warning("%s (no alerts: channels in jobs.yaml, so nobody was told)", title)
            return
        level = "failure" if claimed.opened else "success"
        sent = sum(send(self.urls, title, body, self.timeout, level))
        log.info("alert sent to %d of %d channels: %s", sent, len(self.urls), title)
