"""Where a worker runs its write path (the event flusher and the cache refresher).

- Thread pool (embedded mode): two threads in the worker process, which owns the embedded ClickHouse engine.
- Prefork pool (server mode): two threads in the pool's first child process. The consumer's process (kombu's
  event loop: receive, hand to the pool, acknowledge) limits a prefork worker's throughput, and a flusher beside
  it competes with it for one interpreter lock; the pool's children wait on the consumer most of the time. A
  child rather than a process of their own: it adds no process to supervise. The flusher consumes the buffer under
  the worker's hostname, so a child that replaces the first one
  (after a crash) recovers the same pending entries at once.
"""

from __future__ import annotations

import logging
import threading

from billiard.process import current_process

from app.caches.refresher import Refresher
from app.stores import migrations, runtime
from app.stores.locks import redis_lock
from app.write.flusher import Flusher

log = logging.getLogger(__name__)


def ensure_schema(rt: runtime.Runtime) -> None:
    """Apply pending migrations (one process at a time; a no-op when the schema is current)."""
    with redis_lock(rt.redis, "migrate", timeout_s=120):
        migrations.migrate(rt.clickhouse)


class WriteThreads:
    """The flusher and the refresher of this process, started and stopped together."""

    def __init__(self, consumer: str) -> None:
        rt = runtime.get()
        self.threads = (Flusher(rt, consumer=consumer), Refresher(rt))

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
