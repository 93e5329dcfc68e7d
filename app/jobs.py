"""The periodic jobs (DESIGN.md section 7): engagement, ranks, cache re-warming, reconciliation.

Each job is a plain function of the runtime returning a summary; ``tasks/maintenance.py`` wraps them in Celery
tasks that hold a lock (no overlap, whatever the number of beats) and a per-interval slot (two beats publishing
the same tick run it once).

- ``recompute_engagement``: the 30-day engagement score of every user with activity in the window, as the sum of
  per-key contributions (``engagementContrib``, sql/0006). A full run rebuilds them from the log's window; an
  incremental run merges only the rows that arrived since (``eventArrivals``) into the stored latest events of
  their keys, zeroes keys whose latest event left the window and moves each owner's score by the difference. Full
  every ``ENGAGEMENT_FULL_EVERY`` runs and whenever it must (first run, excluded users or weights changed, an
  interrupted run, arrivals expired). Scores live in ``engagementCurrent``; every change is also recorded as an
  ``Engagement`` event (the trend) and written into cached hashes.
- ``recompute_ranks``: the leaderboard built under a temporary key and swapped in with ``RENAME`` (readers see the
  old board or the new one, never a part), then ``rank`` in cached hashes.
- ``refresh_expiring_caches``: users read in the last hour whose hash expires soon (or expired) are recomputed,
  at most ``REFRESH_MAX_USERS`` per run; their reaction hashes get their TTL renewed. Cold users expire.
- ``reconcile_caches``: cached hashes of recently changed users and a random sample of recently read ones are
  compared with ClickHouse and repaired; the drift ratio is logged and counted.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app import constants as c
from app import metrics_cache
from app.metrics import ADDITIVE, EXCLUDED_USERS, SCORE_SCALE, UserMetrics, compute_user_metrics, format_score
from app.redis_store import RedisClient, server_time_us
from app.refresher import refresh_users
from app.runtime import Runtime

log = logging.getLogger(__name__)

_OWNER_STATE_TYPES = "('Follow', 'ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry')"
_WEIGHT = "transform(metricType, {wtypes:Array(String)}, {wvalues:Array(Int64)}, {wdefault:Int64})"

_KEY4 = "entityType, entityId, metricType, userId"
_NIL = "toUUID('00000000-0000-0000-0000-000000000000')"
_CONTRIB_COLUMNS = "entityType, entityId, metricType, userId, eventId, ownerId, contribution, at, ver, isOn"


def _ver(created: str, event_id: str) -> str:
    """(createdAt, eventId) packed into one UInt256 that orders as "later event, then higher id" (as in sql/0003)."""
    return (
        f"bitShiftLeft(toUInt256(toUnixTimestamp64Milli({created})), 128) + "
        f"toUInt256(reinterpretAsUInt128(reverse(unhex(replaceAll(toString({event_id}), '-', '')))))"
    )


# A state key counts its weight while its latest event is on and inside the window, for an owner who is not the
# actor; an additive event counts value x weight on the same conditions; neither counts when the actor is excluded
# (applied once, on the union: one set of excluded users per statement).
_STATE_COUNTS = "on AND lastAt >= {{since:DateTime64(3, 'UTC')}} AND owner != 0 AND userId != owner"
_EVENT_COUNTS = "at >= {{since:DateTime64(3, 'UTC')}} AND owner != 0 AND actor != owner"
_OUTER = """
SELECT entityType, entityId, metricType, userId, eventId, ownerId,
       if(userId IN {excluded}, toInt64(0), contribution) AS counted, at, ver, isOn,
       {{now:DateTime64(3, 'UTC')}}
FROM ("""


def _contrib_rows(state_source: str, event_source: str) -> str:
    """The contribution rows of the state keys and additive events produced by two grouped subqueries."""
    state = (
        f"SELECT {_KEY4}, {_NIL} AS eventId, owner AS ownerId, "  # noqa: S608
        f"toInt64(if({_STATE_COUNTS}, {{weight}}, 0)) AS contribution, lastAt AS at, latestVer AS ver, "
        f"on AS isOn FROM ({state_source})"
    )
    events = (
        f"SELECT et, eid, mt, actor, eventId, owner, "  # noqa: S608
        f"toInt64(if(fresh, if({_EVENT_COUNTS}, val * w, 0), if(at >= {{{{since:DateTime64(3, 'UTC')}}}}, kept, 0))), "
        f"at, {_ver('at', 'eventId')}, 1 FROM ({event_source})"
    )
    return f"{_OUTER}\n    {state}\n    UNION ALL\n    {events}\n)"


# Full run (sql/0006): every state key with an event in the window (its latest event, counting or not) and every
# additive event that counts, from the log. Every value is a bound parameter.
_FULL_STATE = f"""
        SELECT {_KEY4}, owner, latest.1 AS lastAt, {_ver("latest.1", "latest.2")} AS latestVer, on
        FROM (
        SELECT {_KEY4}, max(ownerId) AS owner, max((createdAt, toString(eventId))) AS latest,
               argMax(metricValue, (createdAt, toString(eventId))) > 0 AS on
        FROM entityMetricEvents
        WHERE createdAt >= {{{{since:DateTime64(3, 'UTC')}}}} AND metricType IN {{state_types}}
        GROUP BY {_KEY4})"""  # noqa: S608
_FULL_EVENTS = """
        SELECT eventId, any(entityType) AS et, any(entityId) AS eid, any(metricType) AS mt, any(userId) AS actor,
               max(ownerId) AS owner, any(metricValue) AS val, any({weight}) AS w, any(createdAt) AS at,
               1 AS fresh, 0 AS kept
        FROM entityMetricEvents
        WHERE createdAt >= {{since:DateTime64(3, 'UTC')}} AND metricType IN {{additive:Array(String)}}
        GROUP BY eventId"""
_FULL_SQL = (
    f"INSERT INTO engagementContrib ({_CONTRIB_COLUMNS}, computedAt)"
    + _contrib_rows(_FULL_STATE, _FULL_EVENTS)
    + f"\nWHERE eventId = {_NIL} OR counted != 0"
)

# Keys whose contribution may have changed since the last run: rows that arrived since (eventArrivals, with a margin
# for inserts in flight) and counting keys whose latest event left the window.
# Every read of the changelog in one run takes the same slice (inserted_after, arrived_until], both on ClickHouse's
# clock: a row landing while the run works is left whole to the next run, never half-seen by this one.
_ARRIVED = (
    "FROM eventArrivals WHERE insertedAt > {{inserted_after:DateTime64(3, 'UTC')}} "
    "AND insertedAt <= {{arrived_until:DateTime64(3, 'UTC')}}"
)
_CHANGED_KEYS_SQL = f"""
INSERT INTO engagementChanged
SELECT DISTINCT * FROM (
    SELECT entityId, userId
    {_ARRIVED} AND (metricType IN {{state_types}} OR metricType IN {{{{additive:Array(String)}}}})
    UNION ALL
    SELECT entityId, userId  -- older versions too: a superset, harmless
    FROM engagementContrib
    WHERE contribution != 0 AND at < {{{{since:DateTime64(3, 'UTC')}}}}
)
"""  # noqa: S608
# The changed keys' new rows: a state key's latest event is the later of the stored one and those that arrived
# (no stored row: no event in the window at the last run); an additive event that arrived counts once; one that did
# not keeps its stored contribution while inside the window.
_NEW_STATE = f"""
        SELECT {_KEY4}, max(ownerId) AS owner, max(at) AS lastAt, max(ver) AS latestVer, argMax(isOn, ver) AS on
        FROM (
            SELECT {_KEY4}, ownerId, at, ver, isOn FROM engagementOld WHERE eventId = {_NIL}
            UNION ALL
            SELECT {_KEY4}, ownerId, createdAt, {_ver("createdAt", "eventId")}, metricValue > 0
            {_ARRIVED} AND metricType IN {{state_types}}
        )
        GROUP BY {_KEY4}"""  # noqa: S608
_NEW_EVENTS = f"""
        SELECT eventId, any(entityType) AS et, any(entityId) AS eid, any(metricType) AS mt, any(userId) AS actor,
               max(ownerId) AS owner, maxIf(metricValue, arrived) AS val, any({{weight}}) AS w,
               any(createdAt) AS at, max(arrived) AS fresh, anyIf(contribution, NOT arrived) AS kept
        FROM (
            SELECT {_KEY4}, eventId, ownerId, metricValue, createdAt, 1 AS arrived, toInt64(0) AS contribution
            {_ARRIVED} AND metricType IN {{{{additive:Array(String)}}}}
            UNION ALL
            SELECT {_KEY4}, eventId, ownerId, 0, at, 0, contribution FROM engagementOld WHERE eventId != {_NIL}
        )
        GROUP BY eventId"""  # noqa: S608
_NEW_SQL = f"INSERT INTO engagementNew ({_CONTRIB_COLUMNS}, computedAt)" + _contrib_rows(_NEW_STATE, _NEW_EVENTS)

# What the changed keys contributed before (the latest version of each), read once. Selected by (entityId, userId)
# alone, every version of a key together: a superset of the changed keys (the same user's other reactions on the
# same image, say), which is harmless: the new rows recompute an unchanged key from its stored latest event (an
# additive event that did not arrive again keeps its contribution while inside the window), so its difference is 0.
_OLD_SQL = f"""
INSERT INTO engagementOld ({_CONTRIB_COLUMNS}, computedAt)
SELECT {_CONTRIB_COLUMNS}, computedAt
FROM engagementContrib FINAL
PREWHERE (entityId, userId) IN (SELECT entityId, userId FROM engagementChanged)
"""  # noqa: S608
# Per owner: new contributions of the changed keys minus what they contributed before, and the current score.
_DELTA_SQL = """
SELECT owner, d, prev
FROM (
    SELECT owner, toInt64(sum(c)) AS d
    FROM (
        SELECT ownerId AS owner, contribution AS c FROM engagementNew
        UNION ALL
        SELECT ownerId, -contribution FROM engagementOld
    )
    GROUP BY owner
    HAVING d != 0 AND owner != 0
) AS delta
LEFT JOIN (
    SELECT userId, score AS prev FROM engagementCurrent FINAL
    WHERE userId IN (SELECT ownerId FROM engagementNew UNION ALL SELECT ownerId FROM engagementOld)
) AS current ON current.userId = delta.owner
"""
# The new rows replace the old ones: every key read into engagementOld has a row in engagementNew (a state key's
# group includes its stored row; an additive event that did not arrive again is kept, or zeroed once it left).
_WRITE_SQL = f"INSERT INTO engagementContrib ({_CONTRIB_COLUMNS}, computedAt) SELECT * FROM engagementNew"  # noqa: S608
_SCORES_FROM_CONTRIB_SQL = (
    "SELECT ownerId, toInt64(sum(contribution)) AS score FROM engagementContrib GROUP BY ownerId HAVING score != 0"
)
INFLIGHT_MARGIN = timedelta(seconds=10)  # inserts stamped this long before a run may still be landing
ARRIVALS_KEPT = timedelta(days=6)  # eventArrivals keeps 7 (sql/0006)
# Past this many changed keys an incremental run is no cheaper than a full one.
INCREMENTAL_MAX_KEYS = 500_000

_CURRENT_SCORES_SQL = "SELECT userId, score FROM engagementCurrent FINAL WHERE score != 0"
_EXCLUDED_CHANGED_SQL = "SELECT max(changedAt), now64(3, 'UTC') FROM excludedUsers"
# Users whose numbers moved since: a range read of the changelog (it holds no Engagement rows).
_CHANGED_USERS_SQL = """
SELECT DISTINCT arrayJoin([userId, ownerId]) AS u FROM eventArrivals
WHERE insertedAt > {since:DateTime64(3, 'UTC')}
"""

# Only cached hashes are touched: a user without one gets everything on the next read anyway. Users and values come
# as two comma-joined strings (a value '' deletes the field): two arguments however many users, cheap to send.
_SET_FIELD_IF_CACHED = """
local users, values = {}, {}
for u in string.gmatch(ARGV[1], '[^,]+') do users[#users + 1] = u end
for v in string.gmatch(ARGV[2] .. ',', '([^,]*),') do values[#values + 1] = v end
local n = 0
for i = 1, #users do
  local key = KEYS[1] .. users[i]
  if redis.call('EXISTS', key) == 1 then
    if values[i] == '' then redis.call('HDEL', key, KEYS[2]) else redis.call('HSET', key, KEYS[2], values[i]) end
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
        chunk = items[i : i + CHUNK]
        users = ",".join(str(u) for u, _ in chunk)
        done += int(script(keys=[_METRICS_PREFIX, field], args=[users, ",".join(v for _, v in chunk)]))
    return done


# -- Engagement ------------------------------------------------------------------------------------------------
def _sql(template: str) -> str:
    return template.format(weight=_WEIGHT, state_types=_OWNER_STATE_TYPES, excluded=EXCLUDED_USERS)


Scores = tuple[dict[int, int], set[int], dict[int, int]]  # new scores, owners considered, their previous scores


def _full_engagement(rt: Runtime, now: datetime) -> Scores:
    """Rebuild every key's contribution; returns the new scores and every owner to consider."""
    ch = rt.clickhouse
    params: dict[str, Any] = {"since": now - rt.window, "now": now, "additive": ADDITIVE, **rt.weights.params()}
    ch.command("TRUNCATE TABLE engagementContrib")
    ch.command(_sql(_FULL_SQL), params)
    scores = {int(o): int(s) for o, s in ch.rows(_SCORES_FROM_CONTRIB_SQL)}
    previous = {int(u): int(s) for u, s in ch.rows(_CURRENT_SCORES_SQL)}
    return scores, set(scores) | set(previous), previous


def _incremental_engagement(rt: Runtime, now: datetime, until: datetime, state: Mapping[str, str]) -> Scores | None:
    """Recompute the changed keys only and move their owners' scores by the difference; None: too many changes."""
    ch = rt.clickhouse
    params: dict[str, Any] = {
        "since": now - rt.window,
        "now": now,
        "additive": ADDITIVE,
        "inserted_after": datetime.fromisoformat(state["inserted_after"]),
        "arrived_until": until,
        **rt.weights.params(),
    }
    for table in ("engagementChanged", "engagementNew", "engagementOld"):
        ch.command(f"TRUNCATE TABLE {table}")
    ch.command(_sql(_CHANGED_KEYS_SQL), params)
    if int(ch.rows("SELECT count() FROM engagementChanged")[0][0]) > INCREMENTAL_MAX_KEYS:
        return None
    ch.command(_OLD_SQL)
    ch.command(_sql(_NEW_SQL), params)
    rows = ch.rows(_DELTA_SQL)
    delta = {int(o): int(d) for o, d, _ in rows}
    previous = {int(o): int(p) for o, _, p in rows}
    touched = sorted(delta)
    _mark(rt, "writing")  # a crash from here on leaves scores and contributions apart: the next run is full
    ch.command(_WRITE_SQL, params)
    return {o: previous.get(o, 0) + delta[o] for o in touched}, set(touched), previous


def _mark(rt: Runtime, phase: str) -> None:
    _save_state(rt.redis, "engagement", {"contrib": phase})


def recompute_engagement(rt: Runtime, full: bool | None = None) -> JobReport:
    """Engagement scores for the window. ``full=None`` decides; ``False`` still runs full when it must (first run,
    excluded users or weights changed, contributions not in step with the scores after an interrupted run)."""
    started = time.perf_counter()
    r, ch = rt.redis, rt.clickhouse
    now = _now(rt)
    state = _state(r, "engagement")
    runs = int(state.get("runs", 0))
    changed_at, engine_now = ch.rows(_EXCLUDED_CHANGED_SQL)[0]
    excluded_changed = str(changed_at)
    until = engine_now if engine_now.tzinfo else engine_now.replace(tzinfo=UTC)  # the changelog's clock
    weights = json.dumps(rt.weights.params(), sort_keys=True, default=str)
    must = (
        not state
        or state.get("contrib") != "ok"
        or state.get("excluded_changed") != excluded_changed
        or state.get("weights") != weights
        or datetime.fromisoformat(state.get("inserted_after", "1970-01-01T00:00:00+00:00"))
        < until - ARRIVALS_KEPT  # arrivals since then are gone
    )
    if full is None:
        full = must or runs % rt.settings.engagement_full_every == 0
    full = full or must
    result = None if full else _incremental_engagement(rt, now, until, state)
    if result is None:
        full = True
        _mark(rt, "writing")
        scores, considered, previous = _full_engagement(rt, now)
    else:
        scores, considered, previous = result
    changed = {u: scores.get(u, 0) for u in considered if scores.get(u, 0) != previous.get(u, 0)}
    cached = _record_scores(rt, changed, now)
    _save_state(
        r,
        "engagement",
        {
            "runs": runs + 1,
            "now": now.isoformat(),
            # Inserts stamped up to a few seconds before now may still be landing; look back a little next time.
            "inserted_after": (until - INFLIGHT_MARGIN).isoformat(),
            "excluded_changed": excluded_changed,
            "weights": weights,
            "contrib": "ok",
        },
    )
    return JobReport(
        "recompute_engagement",
        "full" if full else "incremental",
        users=len(considered),
        changed=len(changed),
        cached_updated=cached,
        seconds=time.perf_counter() - started,
    )


def _record_scores(rt: Runtime, changed: Mapping[int, int], now: datetime) -> int:
    """Store changed scores (current table, and through engagementTrendMv the trend; cached hashes)."""
    if not changed:
        return 0
    rows = [(u, s, now) for u, s in changed.items()]
    rt.clickhouse.insert("engagementCurrent", rows, ["userId", "score", "computedAt"])
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
