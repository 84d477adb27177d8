"""GET /metrics: the ledger in the Prometheus text format, read afresh on every scrape.

    oyez_deliveries{target,status}      deliveries in the ledger (gauge: they change status)
    oyez_attempts_total{outcome}        attempts by outcome (sent, found, transient, ...)
    oyez_retries_total                  attempts after a delivery's first
    oyez_lateness_seconds               histogram of how late sent deliveries went out
    oyez_next_post_seconds              until the next open delivery is due (absent: none)
    oyez_config_valid                   1 when jobs.yaml on disk is valid (and not refused)
    oyez_target_healthy{target}         0 while a target's credentials are refused
    oyez_reloads_total{result}          jobs.yaml readings, ok or invalid
    oyez_daemons_running                daemons with a heartbeat in the last 30 s

Dry-run deliveries are left out. The numbers are the ledger's, so every daemon
sharing a database reports the same ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import col, select

from .. import report

if TYPE_CHECKING:
    from ..ledger import Ledger

CONTENT_TYPE = CONTENT_TYPE_LATEST
BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0)


def render(config_path: str, ledger: Ledger | str, now: datetime) -> bytes:
    """The exposition text for one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_LedgerCollector(config_path, ledger, now))
    return generate_latest(registry)


class _LedgerCollector(Collector):
    def __init__(self, config_path: str, ledger: Ledger | str, now: datetime) -> None:
        self.config_path, self.ledger, self.now = config_path, ledger, now

    def collect(self) -> Iterator[Metric]:
        disk = report.read_disk(self.config_path, self.ledger if not isinstance(self.ledger, str) else None)
        yield GaugeMetricFamily("oyez_config_valid", "1 when jobs.yaml on disk is valid",
                                value=0 if disk.problems else 1)
        if isinstance(self.ledger, str):
            return  # no ledger yet: nothing has run
        yield from _deliveries(self.ledger, self.now)
        healthy = GaugeMetricFamily("oyez_target_healthy", "0 while a target's credentials are refused",
                                    labels=["target"])
        unhealthy = self.ledger.unhealthy()
        for name in sorted(set(disk.config.targets if disk.config else ()) | set(unhealthy)):
            healthy.add_metric([name], 0 if name in unhealthy else 1)
        yield healthy
        reloads = CounterMetricFamily("oyez_reloads", "Readings of jobs.yaml by a daemon",
                                      labels=["result"])
        with self.ledger.session() as s:
            from ..ledger import Reload

            counts = dict(s.exec(select(Reload.ok, func.count()).group_by(col(Reload.ok))).all())
        reloads.add_metric(["ok"], counts.get(True, 0))
        reloads.add_metric(["invalid"], counts.get(False, 0))
        yield reloads
        running = sum(d["alive"] for d in report.daemon_rows(self.ledger, self.now))
        yield GaugeMetricFamily("oyez_daemons_running", "Daemons with a heartbeat in the last 30 s",
                                value=running)


def _deliveries(ledger: Ledger, now: datetime) -> Iterator[Metric]:
    from ..ledger import ACTIVE, Attempt, Delivery

    real = Delivery.dry_run == False  # noqa: E712 (SQL, not Python)
    with ledger.session() as s:
        by_status = s.exec(select(Delivery.target, Delivery.status, func.count()).where(real)
                           .group_by(Delivery.target, Delivery.status)).all()
        attempts = s.exec(select(Attempt.outcome, func.count())
                          .join(Delivery, col(Delivery.id) == Attempt.delivery_id).where(real)
                          .group_by(Attempt.outcome)).all()
        retries = s.exec(select(func.count()).select_from(Attempt)
                         .join(Delivery, col(Delivery.id) == Attempt.delivery_id)
                         .where(real, Attempt.number > 1)).one()
        late = s.exec(select(Delivery.lateness_ms).where(
            real, Delivery.status == "sent", col(Delivery.lateness_ms).is_not(None))).all()
        upcoming = s.exec(select(Delivery.due_at, Delivery.next_attempt_at).where(
            real, col(Delivery.status).in_(ACTIVE))).all()
    deliveries = GaugeMetricFamily("oyez_deliveries", "Deliveries in the ledger by target and status",
                                   labels=["target", "status"])
    for target, status, n in by_status:
        deliveries.add_metric([target, status], n)
    yield deliveries
    outcomes = CounterMetricFamily("oyez_attempts", "Attempts by outcome", labels=["outcome"])
    for outcome, n in attempts:
        outcomes.add_metric([outcome], n)
    yield outcomes
    yield CounterMetricFamily("oyez_retries", "Attempts after a delivery's first", value=retries)
    seconds = [ms / 1000 for ms in late if ms is not None]
    yield HistogramMetricFamily(
        "oyez_lateness_seconds", "How late sent deliveries went out",
        buckets=[*((str(b), sum(x <= b for x in seconds)) for b in BUCKETS), ("+Inf", len(seconds))],
        sum_value=sum(seconds))
    dues = [max(due, retry or due) for due, retry in upcoming]
    if dues:
        yield GaugeMetricFamily("oyez_next_post_seconds", "Seconds until the next open delivery is due",
                                value=max(0.0, (min(dues) - now).total_seconds()))
