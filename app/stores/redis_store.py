"""Redis adapter: client construction and the small atomic scripts the project relies on."""

from __future__ import annotations

import redis

from app.core.settings import Settings

RedisClient = redis.Redis


def connect(url: str, settings: Settings) -> RedisClient:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
    )


def server_time_us(r: RedisClient) -> int:
    """Redis's clock in microseconds: one clock for every writer, used to order cache snapshots."""
    seconds, micros = r.time()
    return int(seconds) * 1_000_000 + int(micros)
