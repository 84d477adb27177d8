"""Time `Ledger.parent`, looked up before every delivery, on a ledger of 2,000 deliveries
(1,000 posts, each with a first comment).

    .venv/bin/python bench/parent_lookup.py
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta

from scheduler.ledger import Ledger
from scheduler.plan import Occurrence


def main() -> None:
    ledger = Ledger(f"sqlite:///{tempfile.mkdtemp()}/oyez.db")
    now = datetime.now(UTC)
    occurrences = []
    for i in range(1000):
        key = f"post:p{i}:page"
        occurrences += [
            Occurrence(key, f"p{i}", "post", "page", now, now + timedelta(minutes=15), "post",
                       None, None, False, "UTC"),
            Occurrence(f"{key}:first-comment", f"p{i}", "first-comment", "page", now,
                       now + timedelta(minutes=30), "comment", None, None, False, "UTC", parent=key),
        ]
    ledger.sync(occurrences, now + timedelta(days=1), dry_run=False, now=now)
    ids = [d.id for d in ledger.deliveries(dry_run=False) if d.id is not None]
    started = time.perf_counter()
    found = sum(ledger.parent(i) is not None for i in ids)
    elapsed = time.perf_counter() - started
    print(f"{len(ids)} lookups ({found} with a parent): {elapsed / len(ids) * 1000:.3f} ms each")


if __name__ == "__main__":
    main()
