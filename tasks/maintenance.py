"""Beat jobs on the maintenance queue."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from app import broker, buffer, deadletters, jobs, runtime
from app import constants as c
from app.locks import redis_lock
from app.runtime import Runtime
from app.settings import load_settings
from tasks.base import project_task

log = logging.getLogger(__name__)
_limit = load_settings().job_time_limit_s


def run_job(
    name: str, interval_s: float, job: Callable[[Runtime], jobs.JobReport], slot: bool = True
) -> dict[str, Any]:
    """Run ``job`` once per interval tick (``slot``) and never twice at once (a lock), then log and keep what it
    did. Two beats publishing the same tick, or a run overlapping a slow previous one, are skipped."""
    rt = runtime.get()
    r = rt.redis
    if slot:
        tick = int(time.time() // interval_s)
        if not r.set(c.JOB_SLOT_KEY.format(job=name, slot=tick), "1", nx=True, ex=max(1, int(interval_s * 2))):
            log.info("%s: this interval's run already happened or is happening; skipped", name)
            r.hincrby(c.COUNTER_KEY, f"job_{name}_skipped_total", 1)
            return {"skipped": "slot"}
    with redis_lock(r, f"job:{name}", timeout_s=_limit, wait_s=0) as held:
        if not held:
            log.info("%s already running elsewhere; skipped", name)
            r.hincrby(c.COUNTER_KEY, f"job_{name}_skipped_total", 1)
            return {"skipped": "lock"}
        report = job(rt)
    log.info(
        "%s%s: %d users, %d changed, %d cached hashes updated, drift %.4f, %.2f s",
        name,
        f" ({report.mode})" if report.mode else "",
        report.users,
        report.changed,
        report.cached_updated,
        report.drift_ratio,
        report.seconds,
    )
    pipe = r.pipeline(transaction=False)
    pipe.hincrby(c.COUNTER_KEY, f"job_{name}_runs_total", 1)
    pipe.hset(c.COUNTER_KEY, f"job_{name}_seconds", round(report.seconds, 4))
    pipe.hset(c.COUNTER_KEY, f"job_{name}_last_run", round(time.time(), 3))
    pipe.expire(c.COUNTER_KEY, c.COUNTER_TTL_S)
    pipe.execute()
    return report.to_json()


@project_task(c.RECOMPUTE_ENGAGEMENT, time_limit_s=_limit, max_retries=0)
def recompute_engagement(self: Any, full: bool | None = None) -> dict[str, Any]:
    """Engagement scores of every user with activity in the window (incremental when safe)."""
    settings = runtime.get().settings
    return run_job(
        c.RECOMPUTE_ENGAGEMENT, settings.engagement_interval_s, lambda rt: jobs.recompute_engagement(rt, full)
    )


@project_task(c.RECOMPUTE_RANKS, time_limit_s=_limit, max_retries=0)
def recompute_ranks(self: Any) -> dict[str, Any]:
    """Rebuild ``leaderboard:engagement`` off to the side, swap it in, update ``rank`` in cached hashes."""
    return run_job(c.RECOMPUTE_RANKS, runtime.get().settings.ranks_interval_s, jobs.recompute_ranks)


@project_task(c.REFRESH_EXPIRING_CACHES, time_limit_s=_limit, max_retries=0)
def refresh_expiring_caches(self: Any) -> dict[str, Any]:
    """Re-warm recently read users' caches shortly before they expire (bounded per run)."""
    return run_job(c.REFRESH_EXPIRING_CACHES, runtime.get().settings.refresh_interval_s, jobs.refresh_expiring_caches)


@project_task(c.RECONCILE_CACHES, time_limit_s=_limit, max_retries=0)
def reconcile_caches(self: Any) -> dict[str, Any]:
    """Compare cached metrics with ClickHouse (recently changed users and a sample), repair, report drift."""
    return run_job(c.RECONCILE_CACHES, runtime.get().settings.reconcile_interval_s, jobs.reconcile_caches)


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
        queued = _events_backlog(rt)
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
