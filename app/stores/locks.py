"""Distributed locks in Redis, with TTLs so a crashed holder never blocks others for long."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.lock import Lock

from app.core import constants as c
from app.stores.redis_store import RedisClient


@contextlib.contextmanager
def redis_lock(r: RedisClient, name: str, timeout_s: float, wait_s: float | None = None) -> Iterator[bool]:
    """Hold lock ``name`` for the block; yields False (and runs nothing under it) if it could not be had.

    ``wait_s=None`` waits up to ``timeout_s``; ``wait_s=0`` tries once (for jobs that must not overlap).
    """
    lock = Lock(r, c.LOCK_KEY.format(name=name), timeout=timeout_s, blocking_timeout=wait_s or timeout_s)
    acquired = lock.acquire(blocking=wait_s != 0)
    try:
        yield acquired
    finally:
        if acquired:
            with contextlib.suppress(Exception):
                lock.release()
