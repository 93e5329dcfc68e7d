"""``refresh_expiring_caches``: users read in the last hour whose hash expires soon (or expired) are recomputed, at
most ``REFRESH_MAX_USERS`` per run; their reaction hashes get their TTL renewed. Cold users expire."""

from __future__ import annotations

import time

from app.caches import metrics_cache, reactions_cache
from app.caches.metrics_cache import CHUNK
from app.core import constants as c
from app.derived.job_state import JobReport
from app.stores.runtime import Runtime
from app.write.refresher import refresh_users


def refresh_expiring_caches(rt: Runtime) -> JobReport:
    started = time.perf_counter()
    r = rt.redis
    now_s = time.time()
    r.zremrangebyscore(c.RECENT_READS_KEY, "-inf", now_s - c.USER_METRICS_TTL_S)
    recent = [int(str(u)) for u in r.zrevrangebyscore(c.RECENT_READS_KEY, "+inf", now_s - c.USER_METRICS_TTL_S)]
    ahead_ms = int(rt.settings.refresh_ahead_s * 1000)
    due: list[int] = []
    for i in range(0, len(recent), CHUNK):
        chunk = recent[i : i + CHUNK]
        pipe = r.pipeline(transaction=False)
        for u in chunk:
            pipe.pttl(metrics_cache.metrics_key(u))
        due.extend(u for u, ttl in zip(chunk, pipe.execute(), strict=True) if int(ttl) < ahead_ms)
    due = due[: rt.settings.refresh_max_users]  # most recently read first
    if due:
        refresh_users(rt, due)
        pipe = r.pipeline(transaction=False)
        for u in due:
            for key in (reactions_cache.flags_key(u), reactions_cache.versions_key(u)):
                pipe.expire(key, c.REACTIONS_TTL_S)
        pipe.execute()
    return JobReport("refresh_expiring_caches", users=len(due), seconds=time.perf_counter() - started)
