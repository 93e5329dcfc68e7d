"""The service's counters: one Redis hash (``stats:counters``, kept ``COUNTER_TTL_S``) that the worker's exporter
publishes to Prometheus. This module alone writes it, except the cache-read script (``app.caches.metrics_cache``),
which counts hits and misses inside the same atomic call that reads the hashes.

Every function takes a client or a pipeline; with a pipeline the writes join it (one round trip with the caller's
other commands), with a client they go in one round trip of their own.
"""

from __future__ import annotations

from typing import Any, cast

from redis.client import Pipeline

from app.core import constants as c
from app.stores.redis_store import RedisClient

KEY = c.COUNTER_KEY


def _pipeline(target: RedisClient | Pipeline) -> tuple[Pipeline, bool]:
    if isinstance(target, Pipeline):
        return target, False
    return target.pipeline(transaction=False), True


def add(target: RedisClient | Pipeline, **by: int) -> None:
    """Increment counters (``name=amount``)."""
    pipe, own = _pipeline(target)
    for name, amount in by.items():
        pipe.hincrby(KEY, name, amount)
    pipe.expire(KEY, c.COUNTER_TTL_S)
    if own:
        pipe.execute()


def put(target: RedisClient | Pipeline, **values: float | int | str) -> None:
    """Set gauges (``name=value``)."""
    pipe, own = _pipeline(target)
    pipe.hset(KEY, mapping=cast(Any, values))
    pipe.expire(KEY, c.COUNTER_TTL_S)
    if own:
        pipe.execute()


def read(r: RedisClient) -> dict[str, str]:
    raw: Any = r.hgetall(KEY)
    return {str(k): str(v) for k, v in raw.items()}
