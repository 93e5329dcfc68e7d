"""``check_event_buffer``: the write path's lag (the broker's ``events`` queue, the event buffer's length, pending
entries and oldest pending age) and the dead letters, logged (a warning past ``BUFFER_LAG_WARN_S``) and kept as
gauges in the service counters. Its runs, failures and skips are counted like every beat job's (``app.jobs.run``)."""

from __future__ import annotations

import logging
from typing import Any

from app.core import constants as c
from app.jobs.run import count_skipped, counted
from app.stores import broker, counters
from app.stores.locks import redis_lock
from app.stores.runtime import Runtime
from app.write import buffer, deadletters

log = logging.getLogger(__name__)


def check_event_buffer(rt: Runtime) -> dict[str, Any]:
    with redis_lock(rt.redis, c.CHECK_EVENT_BUFFER, timeout_s=30, wait_s=0) as held:
        if not held:
            log.info("check_event_buffer already running elsewhere; skipped")
            count_skipped(rt.redis, c.CHECK_EVENT_BUFFER)
            return {"skipped": True}
        with counted(rt.redis, c.CHECK_EVENT_BUFFER):
            return _check(rt)


def _check(rt: Runtime) -> dict[str, Any]:
    stats = buffer.stats(rt.redis)
    dead = deadletters.count(rt.redis)
    queued = _events_backlog(rt)
    counters.put(
        rt.redis,
        buffer_length=stats.length,
        buffer_pending=stats.pending,
        buffer_oldest_pending_age_s=round(stats.oldest_pending_age_s, 3),
        dead_letters=dead,
    )
    lag_s = max(stats.oldest_pending_age_s, queued.oldest_age_s or 0.0)
    level = logging.WARNING if lag_s > rt.settings.buffer_lag_warn_s else logging.INFO
    log.log(
        level,
        "ingest: %d messages in the events queue (oldest %s); event buffer: %d entries, %d pending, oldest "
        "pending %.1f s; %d dead letters",
        queued.depth,
        "unknown" if queued.oldest_age_s is None else f"{queued.oldest_age_s:.1f} s",
        stats.length,
        stats.pending,
        stats.oldest_pending_age_s,
        dead,
    )
    return {
        "length": stats.length,
        "pending": stats.pending,
        "oldest_pending_age_s": stats.oldest_pending_age_s,
        "dead_letters": dead,
        "queued": queued.depth,
        "queued_oldest_age_s": queued.oldest_age_s,
    }


def _events_backlog(rt: Runtime) -> broker.QueueStats:
    """Messages waiting in the broker's ``events`` queue: lag the buffer cannot see yet."""
    try:
        return broker.queue_stats(broker.broker_url(rt.settings), [c.EVENTS_QUEUE])[c.EVENTS_QUEUE]
    except Exception as exc:
        log.warning("cannot read the broker's events queue: %s", exc)
        return broker.QueueStats(depth=0, oldest_age_s=None)
