"""A worker killed with SIGKILL in the middle of its batches loses nothing and counts nothing twice.

Given a worker subprocess (its own chdb path and Redis databases) whose tasks have received thousands of events
while its flusher is still writing them, when it is killed mid-batch and a new worker starts, then every event is
in ClickHouse exactly as often as it counts: download totals (additive, where a double count would show) and
follower counts equal what was sent.

Also: messages a killed worker held unacknowledged run as soon as a worker is back (embedded mode restores them;
RabbitMQ requeues them by itself), and a cache Redis outage makes tasks wait and retry, never drop a message.

The kill comes once the broker has handed every message to the tasks. That isolates this project's guarantee
(received → buffered → written, at least once, idempotently) from a known window of Celery's Redis transport:
kombu pops a message and records it as unacknowledged in two steps, so a SIGKILL between them loses that one
in-flight message (see docs/reliability.md). RabbitMQ as the broker does not have that window.
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

import pytest
import redis
from kombu import Connection, Exchange, Queue

from app.core.paths import REPO
from app.core.settings import Settings
from app.local import embedded_redis, process
from app.stores.broker import queue_stats
from bench.harness import task_body, task_headers, worker_argv
from tests.stack import AMQP_URL, BASE_REDIS_URL, ROOT, SERVER_MODE, process_env, rabbitmq_up, wait_until, with_db
from tests.stack import BROKER_URL as SESSION_BROKER_URL

CACHE_URL = with_db(BASE_REDIS_URL, 12)
BROKER_URL = with_db(BASE_REDIS_URL, 13)
OWNERS = (1, 2, 3, 4, 5)
N_DOWNLOADS = 1500
N_FOLLOWS = 500


def _env(flush_max_events: int = 300, **extra: str) -> dict[str, str]:
    data_dir = Path(extra.get("DATA_DIR", str(ROOT / "crash")))
    env = process_env(data_dir.name)
    env.update(
        DATA_DIR=str(data_dir),
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


def _read_truth(**extra: str) -> dict[str, dict[str, int]]:
    """Every owner's metrics from ClickHouse (cache cleared), read with the CLI once no worker owns the path."""
    cache = redis.Redis.from_url(extra.get("REDIS_URL", CACHE_URL))
    cache.delete(*[f"user:metrics:{o}" for o in OWNERS], *[f"user:metrics:v:{o}" for o in OWNERS])
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app", "user-metrics", *map(str, OWNERS), "--json"],
        env=_env(**extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _assert_exact(metrics: dict[str, dict[str, int]], n_downloads: int = N_DOWNLOADS) -> None:
    assert sum(m["downloadCount"] for m in metrics.values()) == n_downloads
    assert sum(m["followerCount"] for m in metrics.values()) == N_FOLLOWS
    for owner in OWNERS:
        assert metrics[str(owner)]["downloadCount"] == n_downloads // len(OWNERS)
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


def _publish_all(eta: str | None = None, broker_url: str = BROKER_URL, n_downloads: int = N_DOWNLOADS) -> None:
    exchange = Exchange("events", type="direct")
    queue = Queue("events", exchange, routing_key="events")
    with Connection(broker_url) as conn:
        producer = conn.Producer()
        for i in range(n_downloads + N_FOLLOWS):
            if i < n_downloads:
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


@pytest.mark.skipif(SERVER_MODE, reason="embedded mode's restore; server mode: the RabbitMQ test below")
def test_sigkill_with_messages_in_flight_recovers_them_at_restart_not_after_the_visibility_timeout() -> None:
    """The broker's visibility timeout stays at its default (an hour); the messages the dead worker had taken
    but not acknowledged must still run as soon as a worker is back (embedded mode restores them at start)."""
    cache, broker = redis.Redis.from_url(CACHE_URL), redis.Redis.from_url(BROKER_URL)
    cache.flushdb()
    broker.flushdb()
    # Messages due in a few seconds: a worker takes them all at once and holds them, unacknowledged, until due.
    _publish_all(eta=(datetime.now(UTC) + timedelta(seconds=20)).isoformat())
    extra = {"DATA_DIR": str(ROOT / "crash_in_flight"), "BROKER_VISIBILITY_TIMEOUT_S": "3600"}
    first = _worker(300, WORKER_PREFETCH="1000", **extra)
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

    second = _worker(300, **extra)
    try:
        took_s = _drain(broker, cache, 120)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(60)
    assert took_s < 120  # not the hour of the visibility timeout
    _assert_exact(_read_truth(**extra))


def _ingested(cache: redis.Redis) -> int:
    return int(cache.hget("stats:counters", "events_ingested_total") or 0)


@pytest.mark.skipif(not rabbitmq_up(), reason="no RabbitMQ on 127.0.0.1:5672")
@pytest.mark.skipif(SESSION_BROKER_URL == AMQP_URL, reason="the session's own worker consumes this vhost")
def test_rabbitmq_requeues_a_killed_workers_messages_at_once() -> None:
    """Server-mode broker choice: with RabbitMQ a dead worker's unacknowledged messages return to the queue when
    its connection drops (no visibility timeout, no restore step), so nothing waits an hour."""
    amqp = AMQP_URL
    cache = redis.Redis.from_url(CACHE_URL)
    cache.flushdb()
    with Connection(amqp) as conn:
        for name in ("events", "maintenance", "reads"):
            Queue(name, Exchange(name, type="direct"), routing_key=name)(conn.default_channel).declare()
            Queue(name, Exchange(name, type="direct"), routing_key=name)(conn.default_channel).purge()
    extra = {"CELERY_BROKER_URL": amqp, "DATA_DIR": str(ROOT / "crash_amqp")}
    _publish_all(eta=(datetime.now(UTC) + timedelta(seconds=15)).isoformat(), broker_url=amqp)
    first = _worker(300, WORKER_PREFETCH="1000", **extra)
    try:
        wait_until(lambda: queue_stats(amqp, ["events"])["events"].depth == 0, "the worker to take every message", 60)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    total = N_DOWNLOADS + N_FOLLOWS
    assert _ingested(cache) == 0  # all of them were held, none ran
    second = _worker(300, WORKER_PREFETCH="1000", **extra)
    try:
        wait_until(lambda: queue_stats(amqp, ["events"])["events"].depth == 0, "the queue to drain", 60)
        wait_until(lambda: _ingested(cache) >= total and cache.xlen("events:buffer") == 0, "every event written", 90)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(60)
    _assert_exact(_read_truth(**extra))


def test_cache_redis_outage_requeues_messages_instead_of_dropping_them(tmp_path: Path) -> None:
    """The cache Redis (event buffer, dead letters) dies while the broker lives: tasks retry with backoff, then,
    unable even to dead-letter, go back to the queue (Celery would reject them without requeue); once Redis is
    back on the same port, every event lands exactly once and nothing was dead-lettered."""
    redis_settings = Settings(DATA_DIR=str(tmp_path / "redis"))
    cache_url, pid = embedded_redis.start(redis_settings)
    extra = {
        "REDIS_URL": cache_url,
        "DATA_DIR": str(tmp_path / "redis_outage"),
        "TASK_MAX_RETRIES": "2",
        "RETRY_BACKOFF_MAX_S": "1",
    }
    broker = redis.Redis.from_url(BROKER_URL)
    broker.flushdb()
    cache = redis.Redis.from_url(cache_url)
    worker = _worker(300, **extra)
    try:
        # The worker is up: a first batch lands.
        _publish_all(n_downloads=0)
        wait_until(lambda: _ingested(cache) >= N_FOLLOWS, "the first batch", 60)
        cache.flushdb()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not process.pid_alive(pid), "redis-server to die", 10)
        # During the outage: every message fails, retries, and goes back to its queue.
        _publish_all(n_downloads=N_DOWNLOADS)
        time.sleep(6)
        assert broker.llen("events") + broker.hlen("unacked") > 0  # nothing ran, nothing was dropped
        url_again, pid = embedded_redis.start(redis_settings)
        assert url_again == cache_url
        wait_until(lambda: broker.llen("events") + broker.hlen("unacked") == 0, "the queue to drain", 120)
        wait_until(lambda: cache.xlen("events:buffer") == 0, "the buffer to drain", 60)
        assert cache.xlen("deadletters") == 0
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
        # Two batches of distinct follows (before and during the outage) and the downloads, each counted once.
        metrics = _read_truth(**extra)
        assert sum(m["followerCount"] for m in metrics.values()) == 2 * N_FOLLOWS
        assert sum(m["downloadCount"] for m in metrics.values()) == N_DOWNLOADS
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        embedded_redis.stop(pid)


@pytest.mark.parametrize("policy", [None, "everysec"])
def test_the_embedded_redis_fsyncs_every_write_unless_told_otherwise(tmp_path: Path, policy: str | None) -> None:
    """The event buffer lives in this Redis: by default it answers a write only once the write is on disk
    (``appendfsync always``), so a SIGKILL loses nothing it answered; ``EMBEDDED_REDIS_APPENDFSYNC=everysec`` trades
    that for speed (reliability docs)."""
    extra = {} if policy is None else {"EMBEDDED_REDIS_APPENDFSYNC": policy}
    redis_settings = Settings(DATA_DIR=str(tmp_path / "redis"), **extra)  # type: ignore[arg-type]
    url, pid = embedded_redis.start(redis_settings)
    try:
        client = redis.Redis.from_url(url)
        assert client.config_get("appendfsync") == {"appendfsync": policy or "always"}
        client.xadd("events:buffer", {"e": "1"})
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not process.pid_alive(pid), "redis-server to die", 10)
        url, pid = embedded_redis.start(redis_settings)
        assert redis.Redis.from_url(url).xlen("events:buffer") == 1
    finally:
        embedded_redis.stop(pid)
