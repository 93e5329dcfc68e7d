"""The services the integration and end-to-end tests run against, their fixtures and helpers.

Importing this module starts what it needs (a private ``redis-server`` unless ``REDIS_URL`` is set) and points
this process's settings at it; the unit tests never import it.

Redis: ``REDIS_URL`` when set (the machine's server, or a Redis Cluster: ``redis+cluster://``), else a private
``redis-server`` started here. The broker and the caches get separate databases so a test can flush the cache
database without unbinding the broker's queues; with a Redis Cluster the caches are the cluster and the Redis broker
database is on a private server. Broker: that Redis, or RabbitMQ when ``CELERY_BROKER_URL`` is an ``amqp://`` URL.
ClickHouse: embedded (the real engine in-process through chdb on a temporary path, one per test session) unless
``CLICKHOUSE_URL`` names a server; then the session, and every process a test starts, gets a database of its own
on that server, dropped at the end. Tables are truncated between tests. Workers: Celery's in-process test worker.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

_ROOT = Path(tempfile.mkdtemp(prefix="usermetrics-tests-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def _private_redis_url() -> str:
    from app.core.settings import Settings
    from app.local import embedded_redis

    url, pid = embedded_redis.start(Settings(DATA_DIR=str(_ROOT / "embedded")))
    atexit.register(embedded_redis.stop, pid)
    return url


def _server_bases() -> list[str]:
    """The configured ClickHouse servers without their database path (a cluster lists several)."""
    configured = os.environ.get("CLICKHOUSE_URL", "")
    if not configured or configured.startswith("chdb:"):
        return []
    bases = []
    for url in configured.split(","):
        parts = urlsplit(url.strip())
        bases.append(urlunsplit((parts.scheme, parts.netloc, "", parts.query, "")))
    return bases


CLICKHOUSE_SERVERS = _server_bases()
CLICKHOUSE_SERVER = CLICKHOUSE_SERVERS[0] if CLICKHOUSE_SERVERS else None
CLUSTER_MODE = bool(os.environ.get("CLICKHOUSE_CLUSTER"))
_RUN_ID = uuid.uuid4().hex[:8]
_DATABASES: list[str] = []


def _drop_databases() -> None:
    for base in CLICKHOUSE_SERVERS:
        for db in _DATABASES:
            with contextlib.suppress(OSError):
                request = urllib.request.Request(f"{base}/", data=f"DROP DATABASE IF EXISTS `{db}`".encode())
                urllib.request.urlopen(request, timeout=30).close()  # noqa: S310 - the configured test server


def clickhouse_env(name: str) -> dict[str, str]:
    """ClickHouse for a process a test starts: its own database on the server (server mode; on every node of a
    cluster), or nothing (embedded: chdb under that process's DATA_DIR)."""
    if CLICKHOUSE_SERVER is None:
        return {}
    db = f"usermetrics_test_{_RUN_ID}_{name}".replace("-", "_")
    if not _DATABASES:
        atexit.register(_drop_databases)
    _DATABASES.append(db)
    return {"CLICKHOUSE_URL": ",".join(f"{base}/{db}" for base in CLICKHOUSE_SERVERS)}


def process_env(name: str, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of a process a test starts: this one's, less ``drop``, with ClickHouse of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("CLICKHOUSE_URL", *drop)}
    env.update(clickhouse_env(name))
    return env


_CONFIGURED_REDIS = os.environ.get("REDIS_URL", "")
# A Redis Cluster (``redis+cluster://``) holds the caches only: it has one database, and Celery has no transport for
# it. The Redis broker database and the tests that need a database of their own then use a private standalone server.
REDIS_CLUSTER = _CONFIGURED_REDIS.split("://", 1)[0].endswith("+cluster")
BASE_REDIS_URL = _CONFIGURED_REDIS if _CONFIGURED_REDIS and not REDIS_CLUSTER else _private_redis_url()
CACHE_REDIS_URL = _CONFIGURED_REDIS if REDIS_CLUSTER else with_db(BASE_REDIS_URL, 15)
# A Redis broker database for tests that need the Redis transport itself (its lists, its unacked hash).
BROKER_REDIS_URL = with_db(BASE_REDIS_URL, 14)
_configured_broker = os.environ.get("CELERY_BROKER_URL", "")
BROKER_URL = _configured_broker if _configured_broker.startswith("amqp") else BROKER_REDIS_URL
BROKER_IS_REDIS = BROKER_URL == BROKER_REDIS_URL
SERVER_MODE = CLICKHOUSE_SERVER is not None

os.environ.update(
    DATA_DIR=str(_ROOT / "data"),
    REDIS_URL=CACHE_REDIS_URL,
    CELERY_BROKER_URL=BROKER_URL,
    FLUSH_MAX_WAIT_MS="50",
    FLUSH_LINGER_MS="20",
    TASK_MAX_RETRIES="2",
    RETRY_BACKOFF_MAX_S="1",
    METRICS_PORT="0",  # the in-process worker does not bind a port; tests read the collector directly
)
os.environ.pop("CLICKHOUSE_URL", None)
os.environ.update(clickhouse_env("session"))

from app.core.settings import Settings, load_settings  # noqa: E402
from app.stores import migrations, runtime  # noqa: E402
from app.stores.runtime import Runtime  # noqa: E402

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


def _on_every_node(rt: Runtime, which: str, statement: str) -> None:
    """Run ``statement`` (``{table}`` in it) on each table of this database that is not a view or a ``Distributed``
    table and matches ``which`` (SQL on ``system.tables``), on every node in cluster mode."""
    for node in rt.clickhouse.nodes():
        try:
            for (table,) in node.rows(
                "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT LIKE '%View%' "
                f"AND engine != 'Distributed' AND {which}"
            ):
                node.command(statement.format(table=table))
        finally:
            if node is not rt.clickhouse:
                node.close()


def wipe_clickhouse(rt: Runtime) -> None:
    """Empty every ClickHouse table (events, aggregates, excluded users), keeping the schema; in cluster mode the
    local tables of every node."""
    _on_every_node(rt, "name != 'schema_migrations'", "TRUNCATE TABLE `{table}`")


def merge_the_log(rt: Runtime) -> None:
    """Merge every part of the event log (each node's own table in cluster mode) into one, as the background merges
    eventually do: the rows a merge collapses are gone."""
    _on_every_node(rt, "name IN ('entityMetricEvents', 'entityMetricEvents_local')", "OPTIMIZE TABLE `{table}` FINAL")


@pytest.fixture()
def clean(rt: Runtime) -> Runtime:
    """A clean slate: empty cache database and empty ClickHouse tables."""
    from app.core import constants as c
    from app.read.reactions_service import FILLS

    # Let the worker's refresher finish what an earlier test queued (it writes hashes before it unqueues them).
    deadline = time.monotonic() + 10
    while rt.redis.zcard(c.METRICS_DIRTY_KEY) and time.monotonic() < deadline:
        time.sleep(0.02)
    FILLS.drain()  # and the reactions fills an earlier test's reads left queued
    rt.redis.flushdb()
    wipe_clickhouse(rt)
    return rt


@pytest.fixture(scope="session")
def celery_app(rt: Runtime):  # type: ignore[no-untyped-def]
    from tasks.celery_app import celery_app as app

    app.loader.import_default_modules()  # the task modules (a worker imports them when it starts)
    return app


@pytest.fixture(scope="session")
def worker(celery_app, rt: Runtime):  # type: ignore[no-untyped-def]
    """A real Celery worker (thread pool) in this process, consuming every queue, with the event flusher."""
    from celery.contrib.testing.worker import start_worker

    from app.core import constants as c

    if not BROKER_IS_REDIS:
        purge_broker()
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
    from app.client import EventProducer

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


AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"  # RabbitMQ's default vhost, for tests that need a broker of their own


def rabbitmq_up() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = 15.0) -> None:
    """Poll ``check`` until it holds; a store that is not there yet (no tables before a worker migrated, a server
    restarting) counts as not yet."""
    from app.core.errors import TransientError

    def holds() -> bool:
        try:
            return bool(check())
        except TransientError:
            return False

    deadline = time.monotonic() + timeout_s
    while not holds():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def worker_report() -> str:
    """What the in-process worker holds and what every busy thread of this process is doing: a wait that times
    out says why (a task blocked in a store call, a lock, a backlog of retries) instead of only that it did."""
    import sys
    import traceback

    from celery.worker import state

    lines = [
        f"active: {[(r.name, r.id) for r in list(state.active_requests)]}",
        f"reserved: {len(state.reserved_requests)}",
    ]
    idle = ("concurrent/futures/thread.py", "threading.py", "selectors.py", "eventio.py")
    for ident, frame in sys._current_frames().items():
        stack = traceback.extract_stack(frame)
        if stack and not any(stack[-1].filename.endswith(name) for name in idle):
            lines.append(f"thread {ident}:\n" + "".join(traceback.format_list(stack[-12:])))
    return "\n".join(lines)


def wait_events(rt: Runtime, n: int, timeout_s: float = 20.0) -> None:
    """Block until ClickHouse holds ``n`` distinct event ids, then until everything downstream settled."""
    deadline = time.monotonic() + timeout_s
    while rt.clickhouse.rows("SELECT uniqExact(eventId) FROM entityMetricEvents")[0][0] < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"ClickHouse did not reach {n} events\n{worker_report()}")
        time.sleep(0.02)
    wait_drained(rt, timeout_s)


def prime(rt: Runtime, *user_ids: int) -> None:
    """Put users' hashes in the cache (as a reader would), so that the write path must keep them current."""
    from app.read.metrics_service import UserMetricsQueryService

    UserMetricsQueryService(rt).get_user_metrics(user_ids)


class BrokerBacklog:
    """Messages the broker still holds for the test worker: waiting in a queue, or taken and not acknowledged."""

    def __init__(self) -> None:
        from kombu import Connection

        self.redis = redis.Redis.from_url(BROKER_URL) if BROKER_IS_REDIS else None
        self.amqp = None if BROKER_IS_REDIS else Connection(BROKER_URL)

    def count(self) -> int:
        from celery.worker import state

        from app.core import constants as c

        queues = (c.EVENTS_QUEUE, c.MAINTENANCE_QUEUE, c.READS_QUEUE)
        held = len(state.reserved_requests) + len(state.active_requests)
        if self.redis is not None:
            return held + sum(int(self.redis.llen(q)) for q in queues) + int(self.redis.hlen("unacked"))
        assert self.amqp is not None
        channel = self.amqp.default_channel
        return held + sum(int(channel.queue_declare(queue=q, passive=True).message_count) for q in queues)

    def close(self) -> None:
        if self.amqp is not None:
            self.amqp.release()


def purge_broker() -> None:
    """Empty the test broker's queues (leftovers of an earlier run on a shared RabbitMQ)."""
    from kombu import Connection, Exchange, Queue

    from app.core import constants as c

    with Connection(BROKER_URL) as conn:
        for name in (c.EVENTS_QUEUE, c.MAINTENANCE_QUEUE, c.READS_QUEUE):
            queue = Queue(name, Exchange(name, type="direct"), routing_key=name)(conn.default_channel)
            queue.declare()
            queue.purge()


def wait_drained(rt: Runtime, timeout_s: float = 20.0) -> None:
    """Block until every sent message was executed and every buffered event was flushed."""
    from app.core import constants as c

    backlog = BrokerBacklog()
    deadline = time.monotonic() + timeout_s
    quiet = 0
    try:
        while time.monotonic() < deadline:
            queued = backlog.count()
            buffered = int(rt.redis.xlen(c.EVENT_STREAM_KEY))
            dirty = int(rt.redis.zcard(c.METRICS_DIRTY_KEY))
            # Quiet three times in a row: a message between the broker's pop and its record is invisible once.
            quiet = quiet + 1 if queued == 0 and buffered == 0 and dirty == 0 else 0
            if quiet >= 3:
                return
            time.sleep(0.02)
    finally:
        backlog.close()
    raise AssertionError(f"not drained in {timeout_s}s: {queued=} {buffered=} {dirty=}\n{worker_report()}")
