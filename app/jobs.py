"""The periodic jobs (DESIGN.md section 7): engagement, ranks, cache re-warming, reconciliation.

Each job is a plain function of the runtime returning a summary; ``tasks/maintenance.py`` wraps them in Celery
tasks that hold a lock (no overlap, whatever the number of beats) and a per-interval slot (two beats publishing
the same tick run it once).

- ``recompute_engagement``: the 30-day engagement score of every user with activity in the window, in bulk from
  the raw log's window (a key with an event in the window has its latest event there), incremental when safe:
  only owners with rows inserted since the last run or leaving the window since then, with a full run every
  ``ENGAGEMENT_FULL_EVERY`` runs and whenever the excluded users changed. Scores live in ``engagementCurrent``;
  every change is also recorded as an ``Engagement`` event (the trend) and written into cached hashes.
- ``recompute_ranks``: the leaderboard built under a temporary key and swapped in with ``RENAME`` (readers see the
  old board or the new one, never a part), then ``rank`` in cached hashes.
- ``refresh_expiring_caches``: users read in the last hour whose hash expires soon (or expired) are recomputed,
  at most ``REFRESH_MAX_USERS`` per run; their reaction hashes get their TTL renewed. Cold users expire.
- ``reconcile_caches``: cached hashes of recently changed users and a random sample of recently read ones are
  compared with ClickHouse and repaired; the drift ratio is logged and counted.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app import constants as c
from app import metrics_cache
from app.clickhouse import insert_events
from app.events import Event, MetricType, derive_event_id
from app.metrics import ADDITIVE, EXCLUDED_USERS, SCORE_SCALE, UserMetrics, compute_user_metrics, format_score
from app.redis_store import RedisClient, server_time_us
from app.refresher import refresh_users
from app.runtime import Runtime

log = logging.getLogger(__name__)

_OWNER_STATE_TYPES = "('Follow', 'ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry')"
_WEIGHT = "transform(metricType, {wtypes:Array(String)}, {wvalues:Array(Int64)}, {wdefault:Int64})"

# Score per owner over the window, from the raw log only (every value a bound parameter; {owners} is a constant
# fragment: empty for a full run, an ownerId filter for an incremental one).
_ENGAGEMENT_SQL = """
SELECT owner, toInt64(sum(s)) AS score
FROM (
    SELECT owner, if(v > 0, w, 0) AS s
    FROM (
        SELECT max(ownerId) AS owner, any(userId) AS actor,
               argMax(metricValue, (createdAt, toString(eventId))) AS v, any({weight}) AS w
        FROM entityMetricEvents
        WHERE createdAt >= {{since:DateTime64(3, 'UTC')}} AND createdAt <= {{now:DateTime64(3, 'UTC')}}
          AND metricType IN {state_types} {owners}
        GROUP BY entityType, entityId, metricType, userId
    )
    WHERE owner != 0 AND actor != owner AND actor NOT IN {excluded}
    UNION ALL
    SELECT owner, val * w
    FROM (
        SELECT eventId, any(ownerId) AS owner, any(userId) AS actor, any(metricValue) AS val, any({weight}) AS w
        FROM entityMetricEvents
        WHERE createdAt >= {{since:DateTime64(3, 'UTC')}} AND createdAt <= {{now:DateTime64(3, 'UTC')}}
          AND metricType IN {{additive:Array(String)}} AND ownerId != 0 {owners}
        GROUP BY eventId
    )
    WHERE actor != owner AND actor NOT IN {excluded}
)
GROUP BY owner
"""

_AFFECTED_OWNERS_SQL = """
SELECT DISTINCT ownerId FROM entityMetricEvents
WHERE ownerId != 0 AND metricType != 'Engagement'
  AND (insertedAt > {inserted_after:DateTime64(3, 'UTC')}
       OR (createdAt >= {left_from:DateTime64(3, 'UTC')} AND createdAt < {left_to:DateTime64(3, 'UTC')}))
"""

_CURRENT_SCORES_SQL = "SELECT userId, score FROM engagementCurrent FINAL WHERE score != 0"
_CURRENT_SCORES_OF_SQL = (
    "SELECT userId, score FROM engagementCurrent FINAL WHERE score != 0 AND userId IN {users:Array(Int64)}"
)
_EXCLUDED_CHANGED_SQL = "SELECT max(changedAt) FROM excludedUsers"
_CHANGED_USERS_SQL = """
SELECT DISTINCT arrayJoin([userId, ownerId]) AS u FROM entityMetricEvents
WHERE insertedAt > {since:DateTime64(3, 'UTC')} AND metricType != 'Engagement'
"""

# Only cached hashes are touched: a user without one gets everything on the next read anyway.
_SET_FIELD_IF_CACHED = """
local n = 0
for i = 1, #ARGV, 2 do
  local key = KEYS[1] .. ARGV[i]
  if redis.call('EXISTS', key) == 1 then
    if ARGV[i + 1] == '' then redis.call('HDEL', key, KEYS[2]) else redis.call('HSET', key, KEYS[2], ARGV[i + 1]) end
    n = n + 1
  end
end
return n
"""
_METRICS_PREFIX = c.USER_METRICS_KEY.removesuffix("{user_id}")
CHUNK = 5000


@dataclass
class JobReport:
    job: str
    mode: str = ""
    users: int = 0  # users computed / ranked / refreshed / compared
    changed: int = 0  # scores changed / hashes repaired
    cached_updated: int = 0
    drift_ratio: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _now(rt: Runtime) -> datetime:
    return datetime.fromtimestamp(server_time_us(rt.redis) / 1e6, UTC)  # one clock for every worker


def _state(r: RedisClient, job: str) -> dict[str, str]:
    raw: Any = r.hgetall(c.JOB_STATE_KEY.format(job=job))
    return {str(k): str(v) for k, v in raw.items()}


def _save_state(r: RedisClient, job: str, state: Mapping[str, str | int | float]) -> None:
    key = c.JOB_STATE_KEY.format(job=job)
    pipe = r.pipeline(transaction=False)
    pipe.hset(key, mapping={k: str(v) for k, v in state.items()})
    pipe.expire(key, c.JOB_STATE_TTL_S)
    pipe.execute()


def set_field_if_cached(r: RedisClient, field: str, values: Mapping[int, str]) -> int:
    """HSET ``field`` on the cached ``user:metrics`` hashes among ``values`` ('' deletes it); returns how many."""
    script = r.register_script(_SET_FIELD_IF_CACHED)
    items = list(values.items())
    done = 0
    for i in range(0, len(items), CHUNK):
        args: list[str | int] = []
        for uid, value in items[i : i + CHUNK]:
            args.extend((uid, value))
        done += int(script(keys=[_METRICS_PREFIX, field], args=args))
    return done


# -- Engagement ------------------------------------------------------------------------------------------------
def engagement_scores(rt: Runtime, now: datetime, owners: Iterable[int] | None = None) -> dict[int, int]:
    """Scores (units of 1/SCORE_SCALE) of every owner with activity in the window, or of ``owners`` only."""
    owner_list = sorted(set(owners)) if owners is not None else None
    sql = _ENGAGEMENT_SQL.format(
        weight=_WEIGHT,
        state_types=_OWNER_STATE_TYPES,
        excluded=EXCLUDED_USERS,
        owners="AND ownerId IN {owners:Array(Int64)}" if owner_list is not None else "",
    )
    params: dict[str, Any] = {"since": now - rt.window, "now": now, "additive": ADDITIVE, **rt.weights.params()}
    if owner_list is not None:
        if not owner_list:
            return {}
        params["owners"] = owner_list
    return {int(o): int(s) for o, s in rt.clickhouse.rows(sql, params)}


def recompute_engagement(rt: Runtime, full: bool | None = None) -> JobReport:
    started = time.perf_counter()
    r, ch = rt.redis, rt.clickhouse
    now = _now(rt)
    state = _state(r, "engagement")
    runs = int(state.get("runs", 0))
    excluded_changed = str(ch.rows(_EXCLUDED_CHANGED_SQL)[0][0])
    if full is None:
        full = (
            not state
            or runs % rt.settings.engagement_full_every == 0
            or state.get("excluded_changed") != excluded_changed
        )
    if full:
        scores = engagement_scores(rt, now)
        previous = {int(u): int(s) for u, s in ch.rows(_CURRENT_SCORES_SQL)}
        considered: set[int] = set(scores) | set(previous)
    else:
        last = datetime.fromisoformat(state["now"])
        # Rows inserted since the last run (with a margin for inserts in flight), and rows leaving the window.
        affected = [
            int(o)
            for (o,) in ch.rows(
                _AFFECTED_OWNERS_SQL,
                {
                    "inserted_after": datetime.fromisoformat(state["inserted_after"]),
                    "left_from": last - rt.window,
                    "left_to": now - rt.window,
                },
            )
        ]
        scores = engagement_scores(rt, now, affected)
        previous = {int(u): int(s) for u, s in ch.rows(_CURRENT_SCORES_OF_SQL, {"users": affected})} if affected else {}
        considered = set(affected)
    changed = {u: scores.get(u, 0) for u in considered if scores.get(u, 0) != previous.get(u, 0)}
    cached = _record_scores(rt, changed, now)
    _save_state(
        r,
        "engagement",
        {
            "runs": runs + 1,
            "now": now.isoformat(),
            # Inserts stamped up to a few seconds before now may still be landing; look back a little next time.
            "inserted_after": (now - timedelta(seconds=10)).isoformat(),
            "excluded_changed": excluded_changed,
        },
    )
    report = JobReport(
        "recompute_engagement",
        "full" if full else "incremental",
        users=len(considered),
        changed=len(changed),
        cached_updated=cached,
        seconds=time.perf_counter() - started,
    )
    return report


def _record_scores(rt: Runtime, changed: Mapping[int, int], now: datetime) -> int:
    """Store changed scores (current table, Engagement trend events, cached hashes)."""
    if not changed:
        return 0
    rows = [(u, s, now) for u, s in changed.items()]
    rt.clickhouse.insert("engagementCurrent", rows, ["userId", "score", "computedAt"])
    stamp = now.isoformat()
    events = [
        Event(
            derive_event_id(f"engagement:{u}", stamp),
            "User",
            u,
            u,
            u,
            MetricType.ENGAGEMENT,
            s,
            now,
        )
        for u, s in changed.items()
    ]
    insert_events(rt.clickhouse, events)
    return set_field_if_cached(
        rt.redis, "engagementScore", {u: format_score(Decimal(s) / SCORE_SCALE) for u, s in changed.items()}
    )


# -- Ranks -----------------------------------------------------------------------------------------------------
def ranked(scores: Mapping[int, int]) -> list[tuple[int, int, int]]:
    """(user, score, rank) for positive scores: higher score first, ties to the lower user id."""
    order = sorted(((u, s) for u, s in scores.items() if s > 0), key=lambda us: (-us[1], us[0]))
    return [(u, s, i + 1) for i, (u, s) in enumerate(order)]


def recompute_ranks(rt: Runtime) -> JobReport:
    started = time.perf_counter()
    r = rt.redis
    rows = rt.clickhouse.rows("SELECT userId, score FROM engagementCurrent FINAL")
    scores = {int(u): int(s) for u, s in rows if int(s) > 0}
    unranked = {int(u) for u, s in rows if int(s) <= 0}
    board = ranked(scores)
    before = {int(str(m)) for m in r.zrange(c.LEADERBOARD_KEY, 0, -1)}
    tmp = f"{c.LEADERBOARD_KEY}:building:{uuid.uuid4().hex}"
    try:
        for i in range(0, len(board), CHUNK):
            pipe = r.pipeline(transaction=False)
            pipe.zadd(tmp, {str(u): s / SCORE_SCALE for u, s, _ in board[i : i + CHUNK]})
            pipe.expire(tmp, 600)
            pipe.execute()
        if board:
            pipe = r.pipeline(transaction=True)
            pipe.rename(tmp, c.LEADERBOARD_KEY)
            pipe.expire(c.LEADERBOARD_KEY, c.LEADERBOARD_TTL_S)
            pipe.execute()
        else:
            r.delete(c.LEADERBOARD_KEY)
    finally:
        r.delete(tmp)
    ranks: dict[int, str] = {u: str(rank) for u, _, rank in board}
    ranks.update({u: "" for u in (before | unranked) - set(ranks)})  # no positive score: no rank
    cached = set_field_if_cached(r, "rank", ranks)
    return JobReport("recompute_ranks", users=len(board), cached_updated=cached, seconds=time.perf_counter() - started)


# -- Cache re-warming ------------------------------------------------------------------------------------------
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
            for key in (c.REACTIONS_KEY.format(user_id=u), c.REACTIONS_VERSION_KEY.format(user_id=u)):
                pipe.expire(key, c.REACTIONS_TTL_S)
        pipe.execute()
    return JobReport("refresh_expiring_caches", users=len(due), seconds=time.perf_counter() - started)


# -- Reconciliation --------------------------------------------------------------------------------------------
def _comparable(m: UserMetrics) -> dict[str, str]:
    data = m.to_hash()
    data.pop("rank", None)
    return data


def reconcile_caches(rt: Runtime, sample: int | None = None, rnd: random.Random | None = None) -> JobReport:
    started = time.perf_counter()
    r, ch = rt.redis, rt.clickhouse
    state = _state(r, "reconcile")
    now = _now(rt)
    since = datetime.fromisoformat(state["now"]) - timedelta(seconds=10) if state else now - timedelta(hours=1)
    changed = {int(u) for (u,) in ch.rows(_CHANGED_USERS_SQL, {"since": since}) if int(u) != 0}
    pool = [int(str(u)) for u in r.zrange(c.RECENT_READS_KEY, 0, -1)]
    size = rt.settings.reconcile_sample if sample is None else sample
    picked = set((rnd or random.SystemRandom()).sample(pool, min(size, len(pool))))
    candidates = sorted(changed | picked)
    checked = repaired = 0
    for i in range(0, len(candidates), 1000):
        chunk = candidates[i : i + 1000]
        version = server_time_us(r)
        cached = {u: m for u, m in metrics_cache.read(r, chunk).items() if m is not None}
        if not cached:
            continue
        fresh = compute_user_metrics(ch, list(cached), weights=rt.weights, window=rt.window)
        wrong = {u: fresh[u] for u, m in cached.items() if _comparable(m) != _comparable(fresh[u])}
        checked += len(cached)
        if wrong:
            for u in list(wrong)[:5]:  # a few examples; the counts tell the rest
                log.warning(
                    "cache drift for user %s: cached %s, ClickHouse %s",
                    u,
                    _comparable(cached[u]),
                    _comparable(wrong[u]),
                )
            repaired += metrics_cache.write(r, version, wrong, rt.settings.stale_copy_ttl_s)
    drift = repaired / checked if checked else 0.0
    _save_state(r, "reconcile", {"now": now.isoformat()})
    pipe = r.pipeline(transaction=False)
    pipe.hincrby(c.COUNTER_KEY, "reconcile_checked_total", checked)
    pipe.hincrby(c.COUNTER_KEY, "reconcile_repaired_total", repaired)
    pipe.hset(c.COUNTER_KEY, "reconcile_drift_ratio", round(drift, 6))
    pipe.expire(c.COUNTER_KEY, c.COUNTER_TTL_S)
    pipe.execute()
    return JobReport(
        "reconcile_caches", users=checked, changed=repaired, drift_ratio=drift, seconds=time.perf_counter() - started
    )
