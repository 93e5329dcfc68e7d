"""Test fixtures against real services.

Redis: ``REDIS_URL`` when set (the machine's server), else a private ``redis-server`` started here. The broker
and the caches get separate databases so a test can flush the cache database without unbinding the broker's
queues. ClickHouse: the real engine in-process (chdb) on a temporary path, one per test session (chdb allows one
engine per process); tables are truncated between tests. Workers: Celery's in-process test worker.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="usermetrics-tests-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def _base_redis_url() -> str:
    configured = os.environ.get("REDIS_URL")
    if configured:
        return configured
    from app import embedded_redis
    from app.settings import Settings

    url, pid = embedded_redis.start(Settings(DATA_DIR=str(_ROOT / "embedded")))
    atexit.register(embedded_redis.stop, pid)
    return url


BASE_REDIS_URL = _base_redis_url()
CACHE_REDIS_URL = _with_db(BASE_REDIS_URL, 15)
BROKER_REDIS_URL = _with_db(BASE_REDIS_URL, 14)

os.environ.update(
    DATA_DIR=str(_ROOT / "data"),
    REDIS_URL=CACHE_REDIS_URL,
    CELERY_BROKER_URL=BROKER_REDIS_URL,
    FLUSH_MAX_WAIT_MS="50",
    FLUSH_LINGER_MS="20",
    TASK_MAX_RETRIES="2",
    RETRY_BACKOFF_MAX_S="1",
    METRICS_PORT="0",  # the in-process worker does not bind a port; tests read the collector directly
)
os.environ.pop("CLICKHOUSE_URL", None)

from app import migrations, runtime  # noqa: E402
from app.runtime import Runtime  # noqa: E402
from app.settings import Settings, load_settings  # noqa: E402

ROOT = _ROOT


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def rt(settings: Settings) -> Iterator[Runtime]:
    r = Runtime(settings)
    runtime.install(r)
    migrations.migrate(r.clickhouse)
    yield r


def wipe_clickhouse(rt: Runtime) -> None:
    """Empty every ClickHouse table (events, aggregates, excluded users), keeping the schema."""
    for (table,) in rt.clickhouse.rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT LIKE '%View%' "
        "AND name != 'schema_migrations'"
    ):
        rt.clickhouse.command(f"TRUNCATE TABLE `{table}`")


@pytest.fixture()
def clean(rt: Runtime) -> Runtime:
    """A clean slate: empty cache database and empty ClickHouse tables."""
    from app import constants as c

    # Let the worker's refresher finish what an earlier test queued (it writes hashes before it unqueues them).
    deadline = time.monotonic() + 10
    while rt.redis.zcard(c.METRICS_DIRTY_KEY) and time.monotonic() < deadline:
        time.sleep(0.02)
    rt.redis.flushdb()
    wipe_clickhouse(rt)
    return rt


@pytest.fixture(scope="session")
def celery_app(rt: Runtime):  # type: ignore[no-untyped-def]
    from tasks.celery_app import celery_app as app

    return app


@pytest.fixture(scope="session")
def worker(celery_app, rt: Runtime):  # type: ignore[no-untyped-def]
    """A real Celery worker (thread pool) in this process, consuming every queue, with the event flusher."""
    from celery.contrib.testing.worker import start_worker

    from app import constants as c

    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        queues=[c.EVENTS_QUEUE, c.MAINTENANCE_QUEUE, c.READS_QUEUE],
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as w:
        yield w


@pytest.fixture()
def producer(celery_app):  # type: ignore[no-untyped-def]
    from app.producer import EventProducer

    return EventProducer(celery_app)


@dataclass
class CliResult:
    exit_code: int
    output: str


@pytest.fixture()
def run_cli(capsys):  # type: ignore[no-untyped-def]
    """Run ``python -m app ARGS`` in this process. Not typer's CliRunner: it swaps and then closes sys.stdout
    while the in-process worker's threads may still be writing to it."""
    import typer

    from app.cli import cli

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            code = typer.main.get_command(cli).main(args=list(args), prog_name="python -m app", standalone_mode=False)
        except SystemExit as exc:
            code = exc.code
        return CliResult(int(code or 0), capsys.readouterr().out)

    return invoke


def wait_events(rt: Runtime, n: int, timeout_s: float = 20.0) -> None:
    """Block until ClickHouse holds ``n`` distinct event ids, then until everything downstream settled."""
    deadline = time.monotonic() + timeout_s
    while rt.clickhouse.rows("SELECT uniqExact(eventId) FROM entityMetricEvents")[0][0] < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"ClickHouse did not reach {n} events")
        time.sleep(0.02)
    wait_drained(rt, timeout_s)


def prime(rt: Runtime, *user_ids: int) -> None:
    """Put users' hashes in the cache (as a reader would), so that the write path must keep them current."""
    from app.query import UserMetricsQueryService

    UserMetricsQueryService(rt).get_user_metrics(user_ids)


def wait_drained(rt: Runtime, timeout_s: float = 20.0) -> None:
    """Block until every sent message was executed and every buffered event was flushed."""
    import redis

    from app import constants as c

    broker = redis.Redis.from_url(BROKER_REDIS_URL)
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline:
        queued = sum(int(broker.llen(q)) for q in (c.EVENTS_QUEUE, c.MAINTENANCE_QUEUE, c.READS_QUEUE))
        unacked = int(broker.hlen("unacked"))
        buffered = int(rt.redis.xlen(c.EVENT_STREAM_KEY))
        dirty = int(rt.redis.zcard(c.METRICS_DIRTY_KEY))
        # Quiet twice in a row: a message between the broker's pop and its unacked record is invisible once.
        quiet = quiet + 1 if queued == 0 and unacked == 0 and buffered == 0 and dirty == 0 else 0
        if quiet >= 3:
            return
        time.sleep(0.02)
    raise AssertionError(f"not drained in {timeout_s}s: {queued=} {unacked=} {buffered=} {dirty=}")
