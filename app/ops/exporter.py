"""Prometheus metrics of the service, served by the worker on ``METRICS_PORT`` (``/metrics``).

The numbers live in Redis (``stats:counters``) so that every process contributes (web processes count cache hits
and misses, workers count events and job runs); the collector reads them at scrape time. Flower's own ``/metrics``
covers Celery (tasks, workers, queues). Broker queues are read from the broker itself at scrape time: depth and,
when the messages carry their send time, the age of the oldest waiting message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.core import constants as c
from app.jobs import registry
from app.jobs.run import job_counter
from app.stores import broker, counters
from app.stores.runtime import Runtime
from app.write import buffer, deadletters

log = logging.getLogger(__name__)

COUNTERS = {
    "messages_ingested_total": "Buffer entries (one per event message) written to ClickHouse",
    "events_ingested_total": "Events written to ClickHouse",
    "flushes_total": "ClickHouse inserts by the flusher",
    "flush_failures_total": "Flush attempts ClickHouse could not take (capacity, timeout, availability); retried",
    "dead_letters_total": "Messages and events dead-lettered",
    "cache_hits_total": "user:metrics lookups answered by Redis",
    "cache_misses_total": "user:metrics lookups that went to ClickHouse",
    "reconcile_checked_total": "Cached hashes compared with ClickHouse by reconcile_caches",
    "reconcile_repaired_total": "Cached hashes repaired by reconcile_caches",
    "dual_discrepancies_total": "Users whose legacy and ClickHouse metrics differed in a dual read",
}
BROKER_QUEUES = (c.EVENTS_QUEUE, c.MAINTENANCE_QUEUE, c.READS_QUEUE)


class StatsCollector(Collector):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Any]:
        yield from self._service_metrics()
        yield from self._broker_metrics()

    def _broker_metrics(self) -> Iterator[Any]:
        try:
            stats = broker.queue_stats(broker.broker_url(self.rt.settings), BROKER_QUEUES)
        except Exception as exc:  # a scrape must not crash the worker
            log.warning("metrics scrape: broker unreachable: %s", exc)
            return
        depth = GaugeMetricFamily(
            "usermetrics_broker_queue_depth", "Messages waiting in each broker queue", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "usermetrics_broker_oldest_message_age_seconds",
            "Age of the oldest message waiting in each broker queue (0: empty; absent: not known)",
            labels=["queue"],
        )
        for queue, qs in stats.items():
            depth.add_metric([queue], qs.depth)
            if qs.oldest_age_s is not None:
                age.add_metric([queue], qs.oldest_age_s)
        yield depth
        yield age

    def _service_metrics(self) -> Iterator[Any]:
        r = self.rt.redis
        try:
            stats = counters.read(r)
            buf = buffer.stats(r)
            dead = deadletters.count(r)
        except Exception as exc:  # a scrape must not crash the worker
            log.warning("metrics scrape: Redis unreachable: %s", exc)
            yield GaugeMetricFamily("usermetrics_up", "Redis reachable at scrape time", value=0)
            return
        yield GaugeMetricFamily("usermetrics_up", "Redis reachable at scrape time", value=1)
        for name, doc in COUNTERS.items():
            yield CounterMetricFamily(
                f"usermetrics_{name.removesuffix('_total')}", doc, value=float(stats.get(name, 0))
            )
        hits, misses = float(stats.get("cache_hits_total", 0)), float(stats.get("cache_misses_total", 0))
        yield GaugeMetricFamily(
            "usermetrics_cache_hit_ratio", "Hits / lookups since counting began", value=hits / (hits + misses or 1)
        )
        yield GaugeMetricFamily(
            "usermetrics_cache_drift_ratio",
            "Share of compared cached hashes that differed from ClickHouse at the last reconcile_caches run",
            value=float(stats.get("reconcile_drift_ratio", 0)),
        )
        yield GaugeMetricFamily("usermetrics_buffer_length", "Entries in the event buffer", value=buf.length)
        yield GaugeMetricFamily("usermetrics_buffer_pending", "Buffer entries read, not yet written", value=buf.pending)
        yield GaugeMetricFamily(
            "usermetrics_buffer_oldest_pending_age_seconds",
            "Age of the oldest unwritten entry",
            value=buf.oldest_pending_age_s,
        )
        yield GaugeMetricFamily("usermetrics_dead_letters", "Dead letters stored", value=dead)
        yield from self._job_metrics(stats)

    def _job_metrics(self, stats: dict[str, str]) -> Iterator[Any]:
        """Per beat job (label ``beat_job``; ``job`` is the scrape target's label in Prometheus): its counters from
        ``app.jobs.run``, its interval from the settings, and when beat should next start it."""

        def known(name: str, what: str) -> float | None:
            value = stats.get(job_counter(name, what))
            return None if value is None else float(value)

        label = ["beat_job"]
        runs = CounterMetricFamily("usermetrics_job_runs", "Successful runs of each beat job", labels=label)
        failures = CounterMetricFamily("usermetrics_job_failures", "Runs of each beat job that raised", labels=label)
        skipped = CounterMetricFamily(
            "usermetrics_job_skipped",
            "Attempts skipped: the tick's run already happened, or the job's lock was held",
            labels=label,
        )
        interval = GaugeMetricFamily("usermetrics_job_interval_seconds", "Each beat job's interval", labels=label)
        duration = GaugeMetricFamily(
            "usermetrics_job_last_duration_seconds", "Duration of each beat job's last successful run", labels=label
        )
        success = GaugeMetricFamily(
            "usermetrics_job_last_success_timestamp_seconds",
            "When each beat job last succeeded (Unix time)",
            labels=label,
        )
        due = GaugeMetricFamily(
            "usermetrics_job_next_due_timestamp_seconds",
            "When beat should next start each job: its last attempt's start plus its interval (Unix time)",
            labels=label,
        )
        for name, every in registry.intervals(self.rt.settings).items():
            runs.add_metric([name], known(name, "runs_total") or 0.0)
            failures.add_metric([name], known(name, "failures_total") or 0.0)
            skipped.add_metric([name], known(name, "skipped_total") or 0.0)
            interval.add_metric([name], every)
            if (seconds := known(name, "seconds")) is not None:
                duration.add_metric([name], seconds)
            if (at := known(name, "last_success")) is not None:
                success.add_metric([name], at)
            if (attempt := known(name, "last_attempt")) is not None:
                due.add_metric([name], attempt + every)
        yield from (runs, failures, skipped, interval, duration, success, due)


def serve(rt: Runtime, port: int, address: str | None = None) -> bool:
    """Start the exporter thread on ``address`` (default ``METRICS_ADDRESS``); False (logged) if the port is taken,
    e.g. by another worker on this host."""
    if port == 0:
        return False
    addr = rt.settings.metrics_address if address is None else address
    try:
        REGISTRY.register(StatsCollector(rt))
        start_http_server(port, addr=addr)
    except (OSError, ValueError) as exc:
        log.warning("metrics exporter not started on %s:%s: %s", addr, port, exc)
        return False
    log.info("Prometheus metrics on %s:%s/metrics", addr, port)
    return True
