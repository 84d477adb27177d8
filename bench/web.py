"""Time the web page's routes on the scale scenario's jobs.yaml and a ledger synced from it.

    python bench/web.py [--entries N] [--repeat R]

Writes a generated jobs.yaml (bench/run.py's `write_scale`: 80% one-offs, 10%
weekly crons, 10% live events), puts the daemon's 7-day window in a fresh
SQLite ledger, serves the page on 127.0.0.1 and times each route over HTTP:
the first request (cold: jobs.yaml is parsed) and the median of the next R.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import write_scale

from scheduler import config, plan
from scheduler.ledger import Ledger
from scheduler.settings import Settings
from scheduler.web import WebServer

ROUTES = ("/", "/?days=92", "/status", "/metrics", "/healthz", "/calendar.ics")


def get(port: int, path: str) -> tuple[float, int, int]:
    """(seconds, status, bytes) for one GET."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    size = len(resp.read())
    conn.close()
    return time.perf_counter() - started, resp.status, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000, help="jobs.yaml entries (10000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per route after the first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        jobs, db = Path(tmp) / "jobs.yaml", f"sqlite:///{tmp}/oyez.db"
        now = datetime.now(UTC)
        write_scale(jobs, "https://graph.invalid", args.entries, now)
        cfg = config.load(jobs, strict_env=False)
        start, end = plan.ledger_window(cfg, now, Settings().horizon)
        ledger = Ledger(db)
        synced = ledger.sync(plan.expand(cfg, start, end), end, dry_run=False, now=now)
        ledger.engine.dispose()
        server = WebServer(str(jobs), Settings(db=db), "127.0.0.1:0")
        server.start()
        port = int(server.url.rsplit(":", 1)[1].rstrip("/"))
        print(f"{args.entries} entries, {len(synced.added)} deliveries in the ledger")
        print(f"{'route':<16} {'status':>6} {'KiB':>7} {'first s':>8} {'median s':>9}")
        try:
            for route in ROUTES:
                first, status, size = get(port, route)
                rest = [get(port, route)[0] for _ in range(args.repeat)]
                print(f"{route:<16} {status:>6} {size / 1024:>7.0f} {first:>8.3f} "
                      f"{statistics.median(rest):>9.3f}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
