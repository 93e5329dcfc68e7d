"""Read side: user metrics from Redis first, ClickHouse behind every miss
(docs/architecture.md, "The path of one read").

- Many users per call: one Redis round trip for the hits, one ClickHouse computation for all the misses, one
  round trip to fill the cache.
- No stampede: a reader takes a short fill lock per missing user (``SET NX``, in Redis, so it holds across
  threads and processes); users whose lock another reader holds are awaited in the cache for up to
  ``CACHE_FILL_WAIT_S`` and computed here only if that reader did not deliver.
- Soft failure: ClickHouse unreachable → the last known values (``user:metrics:last:{id}``) are served and the
  users are reported in ``stale``; Redis unreachable → every user is computed from ClickHouse. Neither raises.
- The source (ClickHouse here or through the worker; PostgreSQL later) comes from settings (``app.read.sources``).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from app.caches import metrics_cache
from app.core import failpoints
from app.core import keys as key_names
from app.core.ids import check_id, check_ids
from app.core.metrics import UserMetrics
from app.read.history import HistoryPoint, check_request
from app.read.sources import HistorySource, MetricsSource, history_source, metrics_source
from app.stores.errors import REDIS_DOWN, TRANSIENT_EXCEPTIONS
from app.stores.redis_store import RedisClient, server_time_us
from app.stores.runtime import Runtime

log = logging.getLogger(__name__)

FILL_POLL_S = 0.01


# Per user: its rank on the board (1 + members with a higher score + tied members with a lower id), 0 for none.
# From the ranks the rank job stored with the board; a board without them (set by hand, or by an older version)
# is ranked here, which costs the tied members of each user's score (thousands where small scores tie).
_RANKS_SCRIPT = """
local out = {}
if redis.call('EXISTS', KEYS[2]) == 1 then
  local stored = redis.call('HMGET', KEYS[2], unpack(ARGV))
  for i = 1, #ARGV do out[i] = tonumber(stored[i] or '0') end
  return out
end
for i = 1, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  out[i] = 0
  if score and tonumber(score) > 0 then
    local rank = 1 + redis.call('ZCOUNT', KEYS[1], '(' .. score, '+inf')
    local me = tonumber(ARGV[i])
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], score, score)) do
      if tonumber(member) < me then rank = rank + 1 end
    end
    out[i] = rank
  end
end
return out
"""


class MetricsResult(dict[int, UserMetrics]):
    """``{userId: UserMetrics}`` plus how fresh it is: ``stale`` users got their last known values because
    ClickHouse could not be reached; ``unavailable`` users had none (their zeros are not real)."""

    def __init__(self) -> None:
        super().__init__()
        self.stale: set[int] = set()
        self.unavailable: set[int] = set()


class UserMetricsQueryService:
    def __init__(self, rt: Runtime, source: MetricsSource | None = None, history: HistorySource | None = None) -> None:
        self.rt = rt
        self.source: MetricsSource = source or metrics_source(rt)
        self.history: HistorySource = history or history_source(rt)

    # Reads ----------------------------------------------------------------------------------------------------
    def get_user_metrics(self, user_ids: Iterable[int], as_of: datetime | None = None) -> MetricsResult:
        """Metrics for many users (duplicates fine, unknown users are zeros); ``as_of`` reads history instead."""
        ids = list(dict.fromkeys(check_ids(user_ids, "user id")))
        out = MetricsResult()
        if not ids:
            return out
        if as_of is not None:
            out.update(self._compute(ids, as_of, out))
            return out
        cached = self._read_cache(ids)
        found: dict[int, UserMetrics] = {uid: m for uid, m in (cached or {}).items() if m is not None}
        misses = [uid for uid in ids if uid not in found]
        if misses and cached is None:  # Redis is down: straight to ClickHouse
            found.update(self._compute(misses, None, out))
        elif misses:
            found.update(self._fill(misses, out))
        for uid in ids:
            out[uid] = found.get(uid) or UserMetrics()
        return out

    def get_user_follower_count(self, user_id: int) -> int:
        user_id = check_id(user_id, "user id")
        return self.get_user_metrics([user_id])[user_id].follower_count

    def get_user_rank(self, user_id: int) -> int | None:
        """1 + users with a higher score (ties: lower user id first), from ``leaderboard:engagement``; None when
        the user has no positive score on the board."""
        user_id = check_id(user_id, "user id")
        try:
            rank = int(self._ranks([user_id])[0])
        except REDIS_DOWN:
            log.warning("Redis unreachable: rank of user %s unknown", user_id)
            return None
        return rank or None

    def _ranks(self, user_ids: list[int]) -> list[int]:
        """Each user's rank on the board, 0 for none (one round trip)."""
        keys = [key_names.leaderboard(), key_names.leaderboard_ranks()]
        return [int(x) for x in self.rt.redis.register_script(_RANKS_SCRIPT)(keys=keys, args=user_ids)]

    def calculate_engagement_score(self, user_id: int) -> Decimal:
        """The engagement score computed now from ClickHouse (no cache)."""
        user_id = check_id(user_id, "user id")
        return self.source([user_id])[user_id].engagement_score

    def get_user_metric_history(
        self, user_id: int, metric: str, start: datetime, end: datetime | None = None, interval: str = "day"
    ) -> list[HistoryPoint]:
        """``metric`` at the end of every ``interval`` from ``start`` to ``end`` (default now), from ClickHouse."""
        user_id = check_id(user_id, "user id")
        start, end = check_request(metric, start, end or datetime.now(UTC), interval)
        return self.history(user_id, metric, start, end, interval)

    # Internals ------------------------------------------------------------------------------------------------
    def _read_cache(self, ids: Sequence[int], note: bool = True) -> dict[int, UserMetrics | None] | None:
        try:
            if note:
                return metrics_cache.read_noting(self.rt.redis, ids, time.time())
            return metrics_cache.read(self.rt.redis, ids)
        except REDIS_DOWN as exc:
            log.warning("Redis unreachable (%s): reading %d users from ClickHouse", exc, len(ids))
            return None

    def _compute(self, ids: Sequence[int], as_of: datetime | None, out: MetricsResult) -> dict[int, UserMetrics]:
        """Ask the source; if ClickHouse cannot be reached, serve the last known values marked stale."""
        try:
            return self.source(ids, as_of)
        except TRANSIENT_EXCEPTIONS as exc:
            log.warning("ClickHouse unreachable (%s): serving the last known metrics of %d users", exc, len(ids))
        last: dict[int, UserMetrics] = {}
        if as_of is None:
            try:
                last = metrics_cache.read_stale(self.rt.redis, ids)
            except REDIS_DOWN:
                last = {}
        out.stale.update(ids)
        out.unavailable.update(set(ids) - set(last))
        return {uid: last.get(uid) or UserMetrics() for uid in ids}

    def _fill(self, misses: list[int], out: MetricsResult) -> dict[int, UserMetrics]:
        r = self.rt.redis
        token = uuid.uuid4().hex
        lock_ttl_ms = int(max(self.rt.settings.read_timeout_s, self.rt.settings.cache_fill_wait_s) * 1000)
        try:
            mine = self._take_fill_locks(r, misses, token, lock_ttl_ms)
        except REDIS_DOWN:
            return self._compute(misses, None, out)
        found: dict[int, UserMetrics] = {}
        if mine:  # another reader may have filled them between our cache read and our lock
            again = self._read_cache(mine, note=False) or {}
            filled = {uid: m for uid, m in again.items() if m is not None}
            if filled:
                found.update(filled)
                self._release(r, list(filled), token)
                mine = [uid for uid in mine if uid not in filled]
        try:
            if mine:
                version = server_time_us(r)
                computed = self._compute(mine, None, out)
                found.update(computed)
                if not out.stale.intersection(mine):
                    self._add_ranks(computed)
                    failpoints.hit(failpoints.METRICS_FILL_BEFORE_WRITE)
                    self._write(version, computed)
        finally:
            if mine:
                self._release(r, mine, token)
        waiting = [uid for uid in misses if uid not in found]
        if waiting:
            found.update(self._await_fill(waiting, out))
        return found

    def _add_ranks(self, computed: dict[int, UserMetrics]) -> None:
        """A freshly filled hash carries the user's rank from the current board (one round trip for all)."""
        ids = list(computed)
        try:
            ranks = self._ranks(ids)
        except REDIS_DOWN:
            return
        for uid, rank in zip(ids, ranks, strict=True):
            if int(rank):
                computed[uid].rank = int(rank)

    def _take_fill_locks(self, r: RedisClient, ids: list[int], token: str, ttl_ms: int) -> list[int]:
        return metrics_cache.take_fill_locks(r, ids, token, ttl_ms)

    def _release(self, r: RedisClient, ids: list[int], token: str) -> None:
        with contextlib.suppress(*REDIS_DOWN):  # the locks expire by themselves
            metrics_cache.release_fill_locks(r, ids, token)

    def _write(self, version: int, computed: dict[int, UserMetrics]) -> None:
        try:
            metrics_cache.write(self.rt.redis, version, computed, self.rt.settings.stale_copy_ttl_s)
        except REDIS_DOWN as exc:
            log.warning("Redis unreachable (%s): metrics of %d users not cached", exc, len(computed))

    def _await_fill(self, ids: list[int], out: MetricsResult) -> dict[int, UserMetrics]:
        """Another reader is filling these users: wait for its result, then compute what did not arrive."""
        found: dict[int, UserMetrics] = {}
        deadline = time.monotonic() + self.rt.settings.cache_fill_wait_s
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            time.sleep(FILL_POLL_S)
            cached = self._read_cache(pending, note=False)
            if cached is None:
                break
            found.update({uid: m for uid, m in cached.items() if m is not None})
            pending = [uid for uid in pending if uid not in found]
        if pending:
            found.update(self._compute(pending, None, out))
        return found
