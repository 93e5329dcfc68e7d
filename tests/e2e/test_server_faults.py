"""Faults in server mode: worker processes killed at random moments with RabbitMQ as the broker, and a ClickHouse
server restarted in the middle of a run. Nothing is lost, nothing counts twice, readers get the last known values
while ClickHouse is away and fresh ones after."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
from kombu import Connection, Exchange, Queue

from app.caches.metrics_cache import metrics_key
from app.core import constants as c
from app.core.paths import REPO
from app.core.settings import Settings
from app.local import clickhouse_server
from app.local.clickhouse_server import ServerPaths
from app.read.metrics_service import UserMetricsQueryService
from app.stores.broker import queue_stats
from app.stores.runtime import Runtime
from tests.e2e.test_multiprocess import CELERY, purge
from tests.stack import (
    AMQP_URL,
    BASE_REDIS_URL,
    BROKER_URL,
    ROOT,
    SERVER_MODE,
    process_env,
    rabbitmq_up,
    wait_until,
    with_db,
)

pytestmark = pytest.mark.e2e
OWNERS = (1, 2, 3, 4, 5)


def publish_downloads(broker: str, n: int, first_user: int = 1000) -> None:
    """``n`` Download events (additive: a double count would show) spread over the owners, as a raw producer."""
    from bench.harness import task_body, task_headers

    exchange = Exchange(c.EVENTS_QUEUE, type="direct")
    queue = Queue(c.EVENTS_QUEUE, exchange, routing_key=c.EVENTS_QUEUE)
    with Connection(broker) as conn:
        producer = conn.Producer()
        for i in range(n):
            kwargs = {
                "entity_type": "Model",
                "entity_id": 500 + i % 20,
                "metric_type": "Download",
                "metric_value": 1,
                "user_id": first_user + i,
                "owner_id": OWNERS[i % len(OWNERS)],
                "event_id": str(uuid.uuid4()),
            }
            producer.publish(
                task_body(kwargs),
                exchange=exchange,
                routing_key=c.EVENTS_QUEUE,
                declare=[queue],
                serializer="json",
                headers=task_headers(c.RECORD_ENTITY_METRIC, str(uuid.uuid4())),
            )


def downloads(rt: Runtime) -> tuple[int, int]:
    """(total downloads as served from ClickHouse for the owners, distinct event ids stored)."""
    metrics = UserMetricsQueryService(rt).source(list(OWNERS), None)
    ids = int(rt.clickhouse.rows("SELECT uniqExact(eventId) FROM entityMetricEvents")[0][0])
    return sum(m.download_count for m in metrics.values()), ids


def spawn(env: dict[str, str], name: str, queues: str = "events,reads") -> subprocess.Popen[bytes]:
    log = open(ROOT / f"server-faults-{name}.log", "ab")  # noqa: SIM115 - the child owns it
    argv = [*CELERY, "worker", "-Q", queues, "--pool", "prefork", "--concurrency", "2", "--hostname", f"{name}@%h"]
    return subprocess.Popen(  # noqa: S603
        argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    proc.wait(60)


@pytest.mark.skipif(not SERVER_MODE, reason="two worker processes need a ClickHouse server")
@pytest.mark.skipif(not rabbitmq_up() or BROKER_URL == AMQP_URL, reason="needs RabbitMQ's default vhost to itself")
def test_sigkill_of_one_of_two_workers_at_random_moments_loses_nothing_with_rabbitmq() -> None:
    n = 5000
    cache_url = with_db(BASE_REDIS_URL, 7)
    env = process_env("server_faults_kills")
    env.update(
        REDIS_URL=cache_url,
        CELERY_BROKER_URL=AMQP_URL,
        DATA_DIR=str(ROOT / "server-faults"),
        LOG_LEVEL="WARNING",
        METRICS_PORT="0",
        RECLAIM_IDLE_MS="1000",
    )
    rt = Runtime(Settings(CLICKHOUSE_URL=env["CLICKHOUSE_URL"], REDIS_URL=cache_url, DATA_DIR=env["DATA_DIR"]))
    rt.redis.flushdb()
    purge(AMQP_URL)
    workers = {name: spawn(env, name) for name in ("w1", "w2")}
    rng = random.Random(20261130)  # noqa: S311 - reproducible kill moments, not security
    kills = 0
    try:
        publish_downloads(AMQP_URL, n)
        # While the queue drains, kill one of the two workers (its whole process group) at random moments.
        for _ in range(3):
            time.sleep(rng.uniform(1.5, 4.0))
            name = rng.choice(sorted(workers))
            kill(workers[name])
            kills += 1
            workers[name] = spawn(env, name)
        wait_until(
            lambda: queue_stats(AMQP_URL, [c.EVENTS_QUEUE])[c.EVENTS_QUEUE].depth == 0, "the queue to drain", 180
        )
        wait_until(lambda: downloads(rt)[1] >= n and rt.redis.xlen(c.EVENT_STREAM_KEY) == 0, f"{n} events stored", 180)
    finally:
        for proc in workers.values():
            kill(proc, signal.SIGTERM)
    total, stored = downloads(rt)
    assert kills == 3
    assert (total, stored) == (n, n)  # 0 lost, 0 counted twice
    rt.close()


def _server_available() -> bool:
    return clickhouse_server.LIB_DIR.joinpath("libchdb.so").exists() or shutil.which("npm") is not None


@pytest.mark.skipif(not _server_available(), reason="neither the server library nor npm to fetch it")
def test_clickhouse_server_restart_mid_run_loses_nothing_and_reads_go_stale_then_fresh(tmp_path: Path) -> None:
    # Given a ClickHouse server of this test's own, a worker on it, and a user whose metrics were read once
    paths = ServerPaths(tmp_path / "clickhouse")
    base = clickhouse_server.start(paths)
    cache_url, broker_url = with_db(BASE_REDIS_URL, 6), with_db(BASE_REDIS_URL, 5)
    env = process_env("unused", drop=("CLICKHOUSE_URL",))
    env.update(
        CLICKHOUSE_URL=f"{base}/restarted",
        REDIS_URL=cache_url,
        CELERY_BROKER_URL=broker_url,
        DATA_DIR=str(tmp_path / "data"),
        LOG_LEVEL="WARNING",
        METRICS_PORT="0",
        CLICKHOUSE_TIMEOUT_S="2",
        TASK_MAX_RETRIES="20",
        RETRY_BACKOFF_MAX_S="2",
    )
    for url in (cache_url, broker_url):
        redis.Redis.from_url(url).flushdb()
    rt = Runtime(Settings(CLICKHOUSE_URL=env["CLICKHOUSE_URL"], REDIS_URL=cache_url, CLICKHOUSE_TIMEOUT_S=2))
    worker = spawn(env, "restart")
    try:
        publish_downloads(broker_url, 500)
        wait_until(lambda: downloads(rt)[1] >= 500, "the first 500 events", 120)
        wait_until(lambda: rt.redis.xlen(c.EVENT_STREAM_KEY) == 0, "the buffer to drain", 60)
        UserMetricsQueryService(rt).get_user_metrics(list(OWNERS))
        # When the server goes away mid-run and events keep coming
        assert clickhouse_server.stop(paths)
        publish_downloads(broker_url, 500, first_user=5000)
        time.sleep(3)
        rt.redis.delete(*[metrics_key(o) for o in OWNERS])  # the hashes expired meanwhile
        during = UserMetricsQueryService(rt).get_user_metrics(list(OWNERS))
        # Then readers get the last known values, marked stale
        assert during.stale == set(OWNERS) and during.unavailable == set()
        assert sum(m.download_count for m in during.values()) == 500
        # When it is back (same port, same data), every event lands once and reads are fresh again
        assert clickhouse_server.start(paths) == base
        wait_until(lambda: downloads(rt)[1] >= 1000, "all 1000 events", 180)
        wait_until(lambda: rt.redis.xlen(c.EVENT_STREAM_KEY) == 0, "the buffer to drain", 60)
        after = UserMetricsQueryService(rt).get_user_metrics(list(OWNERS))
        assert after.stale == set()
        assert downloads(rt) == (1000, 1000)
        assert int(rt.redis.xlen(c.DEAD_LETTER_KEY)) == 0
    finally:
        kill(worker, signal.SIGTERM)
        rt.close()
        clickhouse_server.stop(paths)
