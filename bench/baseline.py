"""The floor for the benchmark: bare APScheduler + one requests.Session, no ledger.

What a hand-rolled cron-like script would do: read a JSON list of
``{"due": unix_seconds, "page": id, "token": token, "message": text}``, schedule
one date job per post, POST it to ``{graph}/v25.0/{page}/feed`` with a Bearer
header at its instant on a 64-thread pool (oyez's default worker count), and
exit once every post has been answered. No ordering, no retries, no records.

    python bench/baseline.py posts.json --graph http://127.0.0.1:PORT [--timeout 120] [--bare]

`--bare` measures the floor instead: no scheduler and no requests, one thread
per page that sleeps until its first post's instant and POSTs that page's
posts in order with bare urllib3 (what any sender, oyez included, must beat).

Exit status: 0 when every post got a 2xx answer, 1 otherwise (counts on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
import urllib3
from apscheduler.schedulers.background import BackgroundScheduler
from requests.adapters import HTTPAdapter

WORKERS = 64  # oyez's default OYEZ_WORKERS
GRAPH_VERSION = "v25.0"
HTTP_TIMEOUT = 20.0


class Sender:
    """Posts one message per call and counts down to zero."""

    def __init__(self, graph: str, total: int) -> None:
        self.graph = graph.rstrip("/")
        self.http = requests.Session()
        pooled = HTTPAdapter(pool_connections=WORKERS, pool_maxsize=WORKERS, max_retries=0)
        self.http.mount("http://", pooled)
        self.http.mount("https://", pooled)
        self.remaining = total
        self.failed = 0
        self.done = threading.Event()
        self._lock = threading.Lock()
        if total == 0:
            self.done.set()

    def send(self, page: str, token: str, message: str) -> None:
        """POST one feed post; a failure is counted, never retried."""
        ok = False
        try:
            resp = self.http.post(f"{self.graph}/{GRAPH_VERSION}/{page}/feed",
                                  data={"message": message},
                                  headers={"Authorization": f"Bearer {token}"},
                                  timeout=(5.0, HTTP_TIMEOUT))
            ok = resp.ok
        except requests.RequestException as exc:
            print(f"baseline: {page}: {type(exc).__name__}", file=sys.stderr)
        with self._lock:
            self.failed += not ok
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()


def run(posts: list[dict[str, Any]], graph: str, timeout: float) -> int:
    """Schedule every post, wait until all are answered (or `timeout`), return the exit status."""
    sender = Sender(graph, len(posts))
    scheduler = BackgroundScheduler(
        timezone=UTC,
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
        executors={"default": {"type": "threadpool", "max_workers": WORKERS}},
    )
    for post in posts:
        scheduler.add_job(sender.send, "date", run_date=datetime.fromtimestamp(post["due"], UTC),
                          args=[post["page"], post["token"], post["message"]])
    scheduler.start()
    try:
        finished = sender.done.wait(timeout)
    finally:
        scheduler.shutdown(wait=False)
        sender.http.close()
    if not finished or sender.failed:
        print(f"baseline: {sender.remaining} unanswered, {sender.failed} failed", file=sys.stderr)
        return 1
    return 0


def bare(posts: list[dict[str, Any]], graph: str, timeout: float) -> int:
    """The floor: each page's posts in order, from their instant, on one bare urllib3 thread."""
    pages: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for post in posts:
        pages[post["page"]].append(post)
    http = urllib3.PoolManager(maxsize=max(len(pages), 1))
    failed: list[str] = []

    def send_all(items: list[dict[str, Any]]) -> None:
        for post in items:
            time.sleep(max(0.0, post["due"] - time.time()))
            resp = http.request("POST", f"{graph.rstrip('/')}/{GRAPH_VERSION}/{post['page']}/feed",
                                body=urlencode({"message": post["message"]}), retries=False,
                                headers={"Authorization": f"Bearer {post['token']}",
                                         "Content-Type": "application/x-www-form-urlencoded"},
                                timeout=HTTP_TIMEOUT)
            if not 200 <= resp.status < 300:
                failed.append(post["message"])

    threads = [threading.Thread(target=send_all, args=(items,), daemon=True) for items in pages.values()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if failed or any(t.is_alive() for t in threads):
        print(f"baseline --bare: {len(failed)} failed", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("posts", type=Path, help="JSON list of {due, page, token, message}")
    parser.add_argument("--graph", required=True, help="Graph base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    parser.add_argument("--bare", action="store_true", help="measure the floor instead (see above)")
    args = parser.parse_args()
    return (bare if args.bare else run)(json.loads(args.posts.read_text()), args.graph, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
