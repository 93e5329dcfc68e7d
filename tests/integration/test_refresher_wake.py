"""The refresher starts on the users its own process's flusher marked at once, not at the end of its idle wait.

A private Redis database (not the one the test worker's refresher drains), the session's ClickHouse: a flusher and
a refresher of this test's own, the refresher with an idle wait of a minute, so that only the wake can explain a
prompt recompute."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from app.caches import metrics_cache
from app.core import constants as c
from app.core.events import Event, MetricType
from app.core.metrics import UserMetrics
from app.core.settings import Settings
from app.stores.runtime import Runtime
from app.write import buffer
from app.write.flusher import Flusher
from app.write.refresher import Refresher
from tests.stack import BASE_REDIS_URL, wait_until, with_db

PRIVATE_REDIS = with_db(BASE_REDIS_URL, 12)


def _followers(rt: Runtime, user: int) -> int | None:
    cached = metrics_cache.read(rt.redis, [user])[user]
    return None if cached is None else cached.follower_count


def test_the_flusher_wakes_the_refresher_when_it_marks_cached_users(clean: Runtime, settings: Settings) -> None:
    rt = Runtime(settings.model_copy(update={"redis_url": PRIVATE_REDIS}), clickhouse=clean.clickhouse)
    rt.redis.flushdb()
    user, follower = 930_001, 930_002
    metrics_cache.write(rt.redis, 0, {user: UserMetrics()})  # cached zeros, as a reader leaves them
    refresher = Refresher(rt, idle_wait_s=60.0)
    woken: list[bool] = []

    def wake() -> None:
        woken.append(True)
        refresher.wake()

    flusher = Flusher(rt, consumer="wake-test", on_marked=wake)
    buffer.ensure_group(rt.redis)
    refresher.start()
    try:
        wait_until(lambda: refresher._thread is not None and refresher._thread.is_alive(), "the refresher to run")
        time.sleep(0.3)  # its first look found an empty set: it now waits its minute
        event = Event(uuid.uuid4(), "User", user, follower, user, MetricType.FOLLOW, 1, datetime.now(UTC))
        buffer.append(rt.redis, c.RECORD_FOLLOW, [event])
        assert flusher.flush_once(block_ms=1000).users_marked == 1
        assert woken, "the flusher marked a cached user without waking the refresher"
        wait_until(lambda: _followers(rt, user) == 1, "the refresher to recompute the marked user", timeout_s=5.0)
        assert rt.redis.zcard(c.METRICS_DIRTY_KEY) == 0
    finally:
        refresher.stop()
        rt.redis.flushdb()
        rt.redis.close()


def test_a_flush_that_marks_nobody_does_not_wake_it(clean: Runtime, settings: Settings) -> None:
    """A user without a cached hash is not marked (computed at its next read), so there is nothing to wake for."""
    rt = Runtime(settings.model_copy(update={"redis_url": PRIVATE_REDIS}), clickhouse=clean.clickhouse)
    rt.redis.flushdb()
    woken: list[bool] = []
    flusher = Flusher(rt, consumer="wake-test", on_marked=lambda: woken.append(True))
    buffer.ensure_group(rt.redis)
    try:
        event = Event(uuid.uuid4(), "User", 930_011, 930_012, 930_011, MetricType.FOLLOW, 1, datetime.now(UTC))
        buffer.append(rt.redis, c.RECORD_FOLLOW, [event])
        result = flusher.flush_once(block_ms=1000)
        assert (result.events, result.users_marked, woken) == (1, 0, [])
    finally:
        rt.redis.flushdb()
        rt.redis.close()
