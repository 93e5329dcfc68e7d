"""The worker's write path: the event flusher and the cache refresher, where they run (``WriteStep``, a worker
bootstep), and the worker's process signals.

- Thread pool (embedded mode): two threads in the worker process, which owns the embedded ClickHouse engine.
- ``--without-write-path`` (the embedded stack's events-only worker, ``app.ops.runner``): none. Its event tasks only
  validate and append to the buffer in Redis; the engine's owner, a thread-pool worker, flushes.
- Prefork pool (server mode): two threads in the pool's first child process. The consumer's process (kombu's
  event loop: receive, hand to the pool, acknowledge) limits a prefork worker's throughput, and a flusher beside
  it competes with it for one interpreter lock; the pool's children wait on the consumer most of the time. A child
  rather than a process of their own: it adds no process to supervise. The flusher consumes the buffer under the
  worker's hostname, so a child that replaces the first one (after a crash) recovers the same pending entries at
  once.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from billiard.process import current_process
from celery import bootsteps, signals
from celery.concurrency import prefork

from app.core import failpoints
from app.ops import exporter
from app.read.answers import CHANNEL_HANDLERS
from app.stores import broker, migrations, runtime
from app.stores.locks import redis_lock
from app.stores.read_channel import ReadServer
from app.write.flusher import Flusher
from app.write.refresher import Refresher

log = logging.getLogger(__name__)


def ensure_schema(rt: runtime.Runtime) -> None:
    """Apply pending migrations (one process at a time; a no-op when the schema is current)."""
    with redis_lock(rt.redis, "migrate", timeout_s=120):
        migrations.migrate(rt.clickhouse)


class WriteThreads:
    """The flusher and the refresher of this process, started and stopped together; in embedded mode also the read
    channel's server (this process owns the engine: ``app.stores.read_channel``)."""

    def __init__(self, consumer: str) -> None:
        rt = runtime.get()
        refresher = Refresher(rt)
        flusher = Flusher(rt, consumer=consumer, on_marked=refresher.wake)
        self.threads: tuple[Flusher | Refresher | ReadServer, ...] = (flusher, refresher)
        if rt.settings.clickhouse_embedded:
            self.threads += (ReadServer(rt, CHANNEL_HANDLERS),)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        for t in self.threads:
            t.stop()

    terminate = stop


class PoolChildWriter:
    """Prefork pool: the write threads run in the pool's first child (index 0), started when that child starts
    and stopped when it exits. A child that replaces it (after a crash or a time limit) starts them again."""

    consumer: str | None = None  # set in the worker's process before the pool forks
    threads: WriteThreads | None = None

    @classmethod
    def prepare(cls, consumer: str) -> None:
        cls.consumer = consumer

    @classmethod
    def child_started(cls) -> None:
        if cls.consumer is None or getattr(current_process(), "index", None) != 0:
            return
        cls.threads = WriteThreads(cls.consumer)
        # Not here: a child that is slow to start is replaced by the pool, and the schema may still be migrating.
        threading.Thread(target=cls._start_when_schema_ready, args=(cls.threads,), daemon=True).start()

    @staticmethod
    def _start_when_schema_ready(threads: WriteThreads) -> None:
        try:
            ensure_schema(runtime.get())
        except Exception:
            log.exception("schema check before the flusher failed; the flusher starts anyway and retries its writes")
        threads.start()

    @classmethod
    def child_exiting(cls) -> None:
        if cls.threads is not None:
            cls.threads.stop()
            cls.threads = None


class WriteStep(bootsteps.StartStopStep):
    """Brings the schema up to date, then runs the write path: threads beside a thread pool,
    in the first child of a prefork pool."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, without_write_path: bool = False, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.enabled = not without_write_path  # a step not enabled is left out of the worker (``include_if``)
        if self.enabled and _is_prefork(parent.pool_cls):
            PoolChildWriter.prepare(parent.hostname)  # before the pool forks: its children inherit it

    def start(self, worker: Any) -> None:
        rt = runtime.get()
        ensure_schema(rt)
        if not _is_prefork(worker.pool_cls):
            # StartStopStep stops (or terminates) ``self.obj`` when the worker shuts down.
            self.obj = WriteThreads(worker.hostname)
            self.obj.start()
        exporter.serve(rt, rt.settings.metrics_port)


def _is_prefork(pool_cls: Any) -> bool:
    return isinstance(pool_cls, type) and issubclass(pool_cls, prefork.TaskPool)


@signals.worker_init.connect
def _restore_unacknowledged(**_: Any) -> None:
    """Embedded mode: the stack's workers (the engine's owner and the events-only worker) are its broker's only
    consumers. Messages a killed worker had taken but not acknowledged go back to their queues now, not after the
    broker's visibility timeout (an hour). With the other worker running, its messages in flight go back too and
    run twice; a repeat is absorbed as any duplicate delivery is (an event's id is stable across redeliveries; a
    job takes its lock; a read answers twice). Server mode: RabbitMQ requeues them when the dead worker's connection
    drops; with a Redis broker they come back after ``BROKER_VISIBILITY_TIMEOUT_S`` (docs/reliability.md)."""
    settings = runtime.get().settings
    if not settings.clickhouse_embedded:
        return
    try:
        restored = broker.restore_unacked(broker.broker_url(settings))
    except Exception:
        log.exception("could not restore unacknowledged broker messages; they return after the visibility timeout")
        return
    if restored:
        log.warning("restored %d unacknowledged broker messages of a worker that died", restored)


@signals.worker_process_init.connect
def _init_process(**_: Any) -> None:
    rt = runtime.get()
    if rt.settings.failpoints:
        failpoints.enable_remote(rt.settings.failpoints.split(","), lambda: runtime.get().redis)
    PoolChildWriter.child_started()


@signals.worker_process_shutdown.connect
def _close_process(**_: Any) -> None:
    PoolChildWriter.child_exiting()
    runtime.install(None)
