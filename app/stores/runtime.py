"""Per-process runtime: the settings and the clients built from them, created once and shared.

Workers build it in ``worker_process_init`` (see ``tasks/celery_app.py``); the CLI builds it on demand. The
ClickHouse handle is opened lazily because in embedded mode only the worker process may open it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from app.core.errors import TransientError
from app.core.metrics import EngagementWeights
from app.core.settings import Settings, load_settings
from app.local import embedded_redis
from app.stores import clickhouse, redis_store
from app.stores.clickhouse import ClickHouse
from app.stores.redis_store import RedisClient

log = logging.getLogger(__name__)


def resolve_redis_url(settings: Settings) -> str:
    """The configured Redis, else the embedded server of the running stack."""
    if settings.redis_url is not None:
        return settings.redis_url
    url = embedded_redis.running_url(settings)
    if url is None:
        raise TransientError(
            "no Redis: set REDIS_URL, or start the stack on embedded defaults with `python -m app run`"
        )
    return url


class Runtime:
    def __init__(self, settings: Settings, clickhouse: ClickHouse | None = None) -> None:
        """``clickhouse``: share an already open handle (the embedded engine is one per process)."""
        self.settings = settings
        self.pid = os.getpid()
        self._redis: RedisClient | None = None
        self._ch: ClickHouse | None = clickhouse
        self._lock = threading.Lock()
        self.weights = EngagementWeights.from_settings(settings.engagement_weights)
        self.window = timedelta(days=settings.engagement_window_days)
        # The jobs' clock (``app.derived.job_state.now``): Redis's, one for every worker; a test injects its own here.
        self.clock: Callable[[], datetime] | None = None

    @property
    def redis(self) -> RedisClient:
        if self._redis is None:
            with self._lock:
                if self._redis is None:
                    self._redis = redis_store.connect(resolve_redis_url(self.settings), self.settings)
        return self._redis

    @property
    def clickhouse(self) -> ClickHouse:
        if self._ch is None:
            with self._lock:
                if self._ch is None:
                    self._ch = clickhouse.connect(self.settings)
        return self._ch

    def close(self) -> None:
        with self._lock:
            if self._ch is not None:
                self._ch.close()
                self._ch = None
            if self._redis is not None:
                # Idle connections only: a thread still holding one (a task that picked this runtime up while it
                # was current) finishes its command instead of reading from a socket closed under it.
                if redis_store.is_cluster(self._redis):  # a pool per node; the client closes them all
                    self._redis.close()
                else:
                    self._redis.connection_pool.disconnect(inuse_connections=False)
                self._redis = None


_current: Runtime | None = None
_current_lock = threading.Lock()
# A block's own runtime (``use``): seen by the code of that block alone, in its thread or task. Other threads of the
# process (an in-process worker's pool, its flusher) keep the process's runtime while a command runs beside them.
_override: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar("runtime_override", default=None)


def get() -> Runtime:
    """This code's runtime: the one a ``use`` block around it gave, else this process's (a forked child gets a
    fresh one: clients must not cross a fork)."""
    global _current
    override = _override.get()
    if override is not None:
        return override
    with _current_lock:
        if _current is None or _current.pid != os.getpid():
            _current = Runtime(load_settings())
        return _current


@contextlib.contextmanager
def use(rt: Runtime) -> Iterator[Runtime]:
    """Make ``rt`` the runtime of the code inside this block (this thread or task), then close it. The process's
    runtime, which other threads use meanwhile, is untouched."""
    token = _override.set(rt)
    try:
        yield rt
    finally:
        _override.reset(token)
        rt.close()


def install(runtime: Runtime | None) -> None:
    """Replace this process's runtime (tests, and the CLI with explicit settings)."""
    global _current
    with _current_lock:
        if _current is not None and _current is not runtime:
            _current.close()
        _current = runtime
