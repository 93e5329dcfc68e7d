"""Keeps ``user:metrics`` hashes current: recomputes users whose numbers changed, off the flusher's path.

The flusher marks the actor and owner of every written event in the ``metrics:dirty`` sorted set (score: when),
if that user has a cached hash; users without one are computed from ClickHouse (which already holds the events)
on their next read. This thread takes the oldest dirty users in bulk, recomputes them from ClickHouse (one set of
queries for all), writes the hashes (versioned, never back in time), and removes each user from the set unless
it was marked again meanwhile. Under load many events of one user coalesce into one
recompute, so the cost follows the number of hot users, not the number of events.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from app.caches import metrics_cache
from app.core import constants as c
from app.core import failpoints
from app.core.backoff import jittered_delay
from app.derived.metrics_from_log import compute_user_metrics
from app.stores.redis_store import RedisClient, is_cluster, server_time_us
from app.stores.runtime import Runtime

log = logging.getLogger(__name__)

BACKOFF_MAX_S = 30.0

# Remove members whose score is still the one we read (not marked again while we worked).
_CLEAR_SCRIPT = """
local removed = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    removed = removed + 1
  end
end
return removed
"""


# Mark users that have a cached hash, or one being computed (its fill lock is held: the snapshot may predate this
# event); the others are computed from ClickHouse, which already holds the event, on their next read. A mark's score
# is Redis's clock in microseconds, and always above the member's previous score: every mark changes the score, so
# the refresher's clear (score unchanged) can never take a mark it has not seen, whatever the clocks of the
# processes that mark (a marker whose clock is behind would otherwise set a lower score, which the clear would take
# as seen).
_USER_METRICS_PREFIX = c.USER_METRICS_KEY.removesuffix("{user_id}")
_FILL_LOCK_PREFIX = c.USER_METRICS_FILL_LOCK_KEY.removesuffix("{user_id}")
# One mark: Redis's clock, above the member's previous score.
_MARK_ONE = """
    local score = now
    local previous = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if previous and tonumber(previous) >= score then score = tonumber(previous) + 1 end
    redis.call('ZADD', KEYS[1], score, ARGV[i])
    marked = marked + 1"""
_MARK_SCRIPT = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local marked = 0
for i = 1, #ARGV do
  if redis.call('EXISTS', '{_USER_METRICS_PREFIX}' .. ARGV[i], '{_FILL_LOCK_PREFIX}' .. ARGV[i]) > 0 then{_MARK_ONE}
  end
end
if marked > 0 then
  redis.call('EXPIRE', KEYS[1], {c.METRICS_DIRTY_TTL_S})
end
return marked
"""
# Cluster mode: the users are known to be cached (looked up on their own nodes first); the marks alone.
_MARK_GIVEN_SCRIPT = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local marked = 0
for i = 1, #ARGV do{_MARK_ONE}
end
redis.call('EXPIRE', KEYS[1], {c.METRICS_DIRTY_TTL_S})
return marked
"""


def mark_dirty(r: RedisClient, user_ids: Iterable[int]) -> int:
    """Queue the cached ones of ``user_ids`` for a recompute; returns how many were cached."""
    ids = [str(u) for u in set(user_ids)]
    if not ids:
        return 0
    if is_cluster(r):
        # A user's hash and fill lock are in the user's slot, the dirty set in another: look first, then mark. The
        # look comes after the events are in ClickHouse, and a fill holds its lock until its hash is written, so a
        # user seen without either is computed after the events landed: nothing is missed between the two steps.
        pipe = r.pipeline(transaction=False)
        for uid in ids:
            pipe.exists(metrics_cache.metrics_key(int(uid)), metrics_cache.fill_lock_key(uid))
        ids = [uid for uid, n in zip(ids, pipe.execute(), strict=True) if int(n)]
        return int(r.eval(_MARK_GIVEN_SCRIPT, 1, c.METRICS_DIRTY_KEY, *ids)) if ids else 0
    return int(r.eval(_MARK_SCRIPT, 1, c.METRICS_DIRTY_KEY, *ids))


def refresh_users(rt: Runtime, user_ids: Iterable[int]) -> int:
    """Recompute and write the hashes of ``user_ids`` (a hash that expired meanwhile is simply rewritten).

    The users' fill locks are held meanwhile (those a reader does not already hold), so that an event landing
    during the computation marks the user again even where the hash had expired (``app.caches.metrics_cache``).
    """
    r = rt.redis
    users = list(user_ids)
    if not users:
        return 0
    token = uuid.uuid4().hex
    ttl_ms = int(max(rt.settings.read_timeout_s, rt.settings.clickhouse_timeout_s) * 2000)
    held = metrics_cache.take_fill_locks(r, users, token, ttl_ms)
    try:
        version = server_time_us(r)  # before the query: see app/caches/metrics_cache.py
        computed = compute_user_metrics(rt.clickhouse, users, weights=rt.weights, window=rt.window)
        return metrics_cache.write(r, version, computed, rt.settings.stale_copy_ttl_s)
    finally:
        metrics_cache.release_fill_locks(r, held, token)


class Refresher:
    """Recomputes the dirty users' hashes. Idle, it looks at the set every ``idle_wait_s`` (marks from other
    processes), and at once when this process's flusher has marked users (``wake``)."""

    def __init__(self, rt: Runtime, batch: int = 5000, idle_wait_s: float = 0.05) -> None:
        self.rt = rt
        self.batch = batch
        self.idle_wait_s = idle_wait_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Users were marked: look at the set now instead of at the end of the idle wait."""
        self._wake.set()

    def refresh_once(self) -> int:
        """One cycle over the oldest dirty users; returns how many were taken off the set."""
        r = self.rt.redis
        taken: Any = r.zrange(c.METRICS_DIRTY_KEY, 0, self.batch - 1, withscores=True)
        if not taken:
            return 0
        refresh_users(self.rt, [int(member) for member, _ in taken])
        failpoints.hit(failpoints.REFRESH_BEFORE_CLEAR)
        args: list[str | int] = []
        for member, score in taken:
            args.extend((member, int(score)))
        r.eval(_CLEAR_SCRIPT, 1, c.METRICS_DIRTY_KEY, *args)
        return len(taken)

    def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._wake.clear()
                done = self.refresh_once()
                failures = 0
                if not done:
                    self._wake.wait(self.idle_wait_s)
            except Exception:
                failures += 1
                delay = jittered_delay(failures, max_s=BACKOFF_MAX_S)
                log.exception("metrics refresh failed (%d in a row); retrying in %.1f s", failures, delay)
                self._stop.wait(delay)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="metrics-refresher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def terminate(self) -> None:
        self.stop()
