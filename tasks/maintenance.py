"""Beat jobs on the maintenance queue."""

from __future__ import annotations

import logging
from typing import Any

from app import buffer, deadletters, runtime
from app import constants as c
from app.locks import redis_lock
from tasks.base import project_task

log = logging.getLogger(__name__)


@project_task(c.CHECK_EVENT_BUFFER, time_limit_s=30, max_retries=0)
def check_event_buffer(self: Any) -> dict[str, Any]:
    """Measure the write path's lag (buffer length, pending entries, oldest pending age) and dead letters."""
    rt = runtime.get()
    with redis_lock(rt.redis, c.CHECK_EVENT_BUFFER, timeout_s=30, wait_s=0) as held:
        if not held:
            log.info("check_event_buffer already running elsewhere; skipped")
            return {"skipped": True}
        stats = buffer.stats(rt.redis)
        dead = deadletters.count(rt.redis)
        pipe = rt.redis.pipeline(transaction=False)
        pipe.hset(
            c.COUNTER_KEY,
            mapping={
                "buffer_length": stats.length,
                "buffer_pending": stats.pending,
                "buffer_oldest_pending_age_s": round(stats.oldest_pending_age_s, 3),
                "dead_letters": dead,
            },
        )
        pipe.expire(c.COUNTER_KEY, c.COUNTER_TTL_S)
        pipe.execute()
        level = logging.WARNING if stats.oldest_pending_age_s > rt.settings.buffer_lag_warn_s else logging.INFO
        log.log(
            level,
            "event buffer: %d entries, %d pending, oldest pending %.1f s; %d dead letters",
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
        }
