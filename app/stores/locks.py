"""Distributed locks in Redis, with TTLs so a crashed holder never blocks others for long."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from redis.lock import Lock

from app.core import constants as c
from app.core.errors import TransientError
from app.stores.redis_store import RedisClient

# The innermost lock the running code holds (``redis_lock``), for ``ensure_held``.
_held: ContextVar[Lock | None] = ContextVar("held_lock", default=None)


class LockLost(TransientError):
    """The lock this work holds is no longer its own: it expired, or Redis lost it (a crash past its fsync)."""


@contextlib.contextmanager
def redis_lock(r: RedisClient, name: str, timeout_s: float, wait_s: float | None = None) -> Iterator[bool]:
    """Hold lock ``name`` for the block; yields False (and runs nothing under it) if it could not be had.

    ``wait_s=None`` waits up to ``timeout_s``; ``wait_s=0`` tries once (for jobs that must not overlap).
    """
    lock = Lock(r, c.LOCK_KEY.format(name=name), timeout=timeout_s, blocking_timeout=wait_s or timeout_s)
    acquired = lock.acquire(blocking=wait_s != 0)
    token = _held.set(lock) if acquired else None
    try:
        yield acquired
    finally:
        if token is not None:
            _held.reset(token)
        if acquired:
            with contextlib.suppress(Exception):
                lock.release()


def ensure_held() -> None:
    """Before a step that must not run twice at once: raise ``LockLost`` if the lock the running code took with
    ``redis_lock`` is no longer its own, so that another holder may be working beside it. Outside a lock (a test
    calling a job directly), nothing to check."""
    lock = _held.get()
    if lock is not None and not lock.owned():
        raise LockLost(f"lock {lock.name!r} is no longer held by this run (expired, or lost with Redis's data)")
