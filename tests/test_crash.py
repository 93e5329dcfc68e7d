"""A worker killed with SIGKILL in the middle of its batches loses nothing and counts nothing twice.

Given a worker subprocess (its own chdb path and Redis databases) whose tasks have received thousands of events
while its flusher is still writing them, when it is killed mid-batch and a new worker starts, then every event is
in ClickHouse exactly as often as it counts: download totals (additive, where a double count would show) and
follower counts equal what was sent.

The kill comes once the broker has handed every message to the tasks. That isolates this project's guarantee
(received → buffered → written, at least once, idempotently) from a known window of Celery's Redis transport:
kombu pops a message and records it as unacknowledged in two steps, so a SIGKILL between them loses that one
in-flight message (see README, Operations). RabbitMQ as the broker does not have that window.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from kombu import Connection, Exchange, Queue

from app.bench.harness import task_body, task_headers, worker_argv
from tests.conftest import BASE_REDIS_URL, ROOT, _with_db

REPO = Path(__file__).resolve().parent.parent
CACHE_URL = _with_db(BASE_REDIS_URL, 12)
BROKER_URL = _with_db(BASE_REDIS_URL, 13)
OWNERS = (1, 2, 3, 4, 5)
N_DOWNLOADS = 1500
N_FOLLOWS = 500


def _env(flush_max_events: int = 300, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CLICKHOUSE_URL"}
    env.update(
        DATA_DIR=str(ROOT / "crash"),
        REDIS_URL=CACHE_URL,
        CELERY_BROKER_URL=BROKER_URL,
        FLUSH_MAX_EVENTS=str(flush_max_events),
        BROKER_VISIBILITY_TIMEOUT_S="3",
        RECLAIM_IDLE_MS="1000",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def _worker(flush_max_events: int, concurrency: int = 4, **extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603
        worker_argv("crash@%h", concurrency), env=_env(flush_max_events, **extra), cwd=REPO, start_new_session=True
    )


def _read_truth() -> dict[str, dict[str, int]]:
    """Every owner's metrics from ClickHouse (cache cleared), read with the CLI once no worker owns the path."""
    cache = redis.Redis.from_url(CACHE_URL)
    cache.delete(*[f"user:metrics:{o}" for o in OWNERS], *[f"user:metrics:v:{o}" for o in OWNERS])
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app", "user-metrics", *map(str, OWNERS), "--json"],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _assert_exact(metrics: dict[str, dict[str, int]]) -> None:
    assert sum(m["downloadCount"] for m in metrics.values()) == N_DOWNLOADS
    assert sum(m["followerCount"] for m in metrics.values()) == N_FOLLOWS
    for owner in OWNERS:
        assert metrics[str(owner)]["downloadCount"] == N_DOWNLOADS // len(OWNERS)
        assert metrics[str(owner)]["followerCount"] == N_FOLLOWS // len(OWNERS)


def _drain(broker: redis.Redis, cache: redis.Redis, timeout_s: float) -> float:
    """Seconds until the queue, the unacknowledged set and the event buffer are all empty."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        queued = broker.llen("events") + broker.hlen("unacked")
        if queued == 0 and cache.xlen("events:buffer") == 0:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(
        f"not drained in {timeout_s} s: queue={broker.llen('events')} unacked={broker.hlen('unacked')} "
        f"buffer={cache.xlen('events:buffer')}"
    )


def _publish_all(eta: str | None = None) -> None:
    exchange = Exchange("events", type="direct")
    queue = Queue("events", exchange, routing_key="events")
    with Connection(BROKER_URL) as conn:
        producer = conn.Producer()
        for i in range(N_DOWNLOADS + N_FOLLOWS):
            if i < N_DOWNLOADS:
                task = "record_entity_metric"
                kwargs = {
                    "entity_type": "Model",
                    "entity_id": 1000 + i % 50,
                    "metric_type": "Download",
                    "metric_value": 1,
                    "user_id": 100 + i,
                    "owner_id": OWNERS[i % len(OWNERS)],
                    "event_id": str(uuid.uuid4()),
                }
            else:
                task = "record_follow"
                kwargs = {"follower_id": 10_000 + i, "user_id": OWNERS[i % len(OWNERS)], "event_id": str(uuid.uuid4())}
            task_id = str(uuid.uuid4())
            producer.publish(
                task_body(kwargs),
                exchange=exchange,
                routing_key="events",
                declare=[queue],
                serializer="json",
                headers={**task_headers(task, task_id), "eta": eta},
            )


def test_sigkill_mid_batch_loses_nothing_and_counts_nothing_twice() -> None:
    cache, broker = redis.Redis.from_url(CACHE_URL), redis.Redis.from_url(BROKER_URL)
    cache.flushdb()
    broker.flushdb()
    # A flusher writing 2 events per insert falls behind the tasks, so the buffer fills up.
    first = _worker(flush_max_events=2)
    try:
        _publish_all()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if broker.llen("events") == 0 and broker.hlen("unacked") == 0:
                break
            time.sleep(0.01)
        ingested = int(cache.hget("stats:counters", "events_ingested_total") or 0)
        assert 0 < ingested < N_DOWNLOADS + N_FOLLOWS, f"kill point missed: {ingested} ingested"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # The kill interrupted the flusher: buffered events not yet written, some read but not acknowledged.
    assert cache.xlen("events:buffer") > 0

    second = _worker(flush_max_events=300)
    try:
        _drain(broker, cache, 180)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(60)
    _assert_exact(_read_truth())


def test_sigkill_with_messages_in_flight_recovers_them_at_restart_not_after_the_visibility_timeout() -> None:
    """The broker's visibility timeout stays at its default (an hour); the messages the dead worker had taken
    but not acknowledged must still run as soon as a worker is back (embedded mode restores them at start)."""
    cache, broker = redis.Redis.from_url(CACHE_URL), redis.Redis.from_url(BROKER_URL)
    cache.flushdb()
    broker.flushdb()
    # Messages due in a few seconds: a worker takes them all at once and holds them, unacknowledged, until due.
    _publish_all(eta=(datetime.now(UTC) + timedelta(seconds=20)).isoformat())
    first = _worker(300, BROKER_VISIBILITY_TIMEOUT_S="3600", WORKER_PREFETCH="1000")
    try:
        deadline = time.monotonic() + 60
        total = N_DOWNLOADS + N_FOLLOWS
        while broker.hlen("unacked") < total and time.monotonic() < deadline:
            time.sleep(0.05)
        in_flight = broker.hlen("unacked")
        assert broker.llen("events") == 0
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert in_flight == N_DOWNLOADS + N_FOLLOWS, f"kill point missed: {in_flight} in flight"

    second = _worker(300, BROKER_VISIBILITY_TIMEOUT_S="3600")
    try:
        took_s = _drain(broker, cache, 120)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(60)
    assert took_s < 120  # not the hour of the visibility timeout
    _assert_exact(_read_truth())
