"""``recompute_peers``: the peers snapshot (``app.insights.peers``), rebuilt whole at every run.

At the run's instant ``asOf`` (the jobs' clock), for every user who may have a value that is not 0 (owners of state
keys and additive events, uploaders): ``compute_user_metrics`` with ``now = asOf`` gives exactly what
``user:metrics`` serves (followerCount, engagementScore, reactionCount, downloadCount, and uploadCount, which makes a
creator), except for the few users with an event dated after ``asOf``, computed as of ``asOf`` from the log so that
no later event counts; followerGrowth30d is followerCount at ``asOf`` minus followerCount 30 days before, both from
the log (a follow key's state at an instant is its latest event by ``(createdAt, eventId)`` up to it, as the as-of
metrics take it). The run writes a new generation under its own keys and switches the pointer in one script; readers
see the old generation or the new one, never a part.

No incremental run: a percentile moves with everyone's values, and engagement scores decay without events, so each
run recomputes everyone (the cost of a full metrics snapshot; see the design notes).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core.metrics import EXCLUDED_USERS_SQL, SCORE_SCALE
from app.derived.job_state import JobReport
from app.derived.job_state import now as clock
from app.derived.metrics_from_log import compute_user_metrics
from app.insights.peers import METRICS, band, encode, generation_key, switch
from app.stores.redis_store import server_time_us
from app.stores.runtime import Runtime

CHUNK = 5000  # users per Redis pipeline
GROWTH_WINDOW = timedelta(days=30)
# The snapshot stays readable this many intervals after its run (at least an hour), then expires.
KEPT_INTERVALS = 6
MIN_KEPT_S = 3600.0

# Every user who may have a value that is not 0: owners of follow and reaction keys and of additive events, and
# uploaders (creators).
CANDIDATES_SQL = """
SELECT u FROM (
    SELECT DISTINCT ownerId AS u FROM stateByOwner
    UNION DISTINCT
    SELECT DISTINCT ownerId FROM additiveDaily
    UNION DISTINCT
    SELECT DISTINCT userId FROM stateByActor WHERE metricType = 'Upload'
)
WHERE u > 0
ORDER BY u
"""

# Actors and owners of the rows dated after ``asof`` (inserted in the last day: producers date events at most an
# hour ahead).
DATED_AHEAD_SQL = """
SELECT DISTINCT arrayJoin([userId, ownerId]) FROM eventArrivals
WHERE insertedAt > {asof:DateTime64(3, 'UTC')} - INTERVAL 1 DAY AND createdAt > {asof:DateTime64(3, 'UTC')}
"""

# Per followed user: follows on at ``asof`` minus follows on at ``start``, from the log (each key's latest event by
# (createdAt, eventId) up to the instant; others than the user, not excluded; the key's owner as the as-of metrics
# resolve it).
GROWTH_SQL = f"""
SELECT owner, toInt64(countIf(now_on)) - toInt64(countIf(then_on)) AS growth
FROM (
    SELECT userId, max(ownerId) AS owner,
           argMaxIf(metricValue, (createdAt, toString(eventId)), createdAt <= {{asof:DateTime64(3, 'UTC')}}) > 0
               AS now_on,
           argMaxIf(metricValue, (createdAt, toString(eventId)), createdAt <= {{start:DateTime64(3, 'UTC')}}) > 0
               AS then_on
    FROM entityMetricEvents
    WHERE entityType = 'User' AND metricType = 'Follow' AND createdAt <= {{asof:DateTime64(3, 'UTC')}}
    GROUP BY entityType, entityId, metricType, userId
)
WHERE owner > 0 AND userId != owner AND userId NOT IN {EXCLUDED_USERS_SQL}
GROUP BY owner
HAVING growth != 0
"""  # noqa: S608


def follower_growth(rt: Runtime, as_of: datetime) -> dict[int, int]:
    """followerGrowth30d of every user whose growth is not 0."""
    params = {"asof": as_of, "start": as_of - GROWTH_WINDOW}
    return {int(u): int(g) for u, g in rt.clickhouse.rows(GROWTH_SQL, params)}


def peer_values(rt: Runtime, as_of: datetime) -> dict[int, tuple[bool, tuple[int, ...]]]:
    """Per user with a value that is not 0 (and every creator): whether a creator, and the values in ``METRICS``
    order (engagementScore in units of 1/10,000)."""
    ch = rt.clickhouse
    users = [int(u) for (u,) in ch.rows(CANDIDATES_SQL)]
    metrics = compute_user_metrics(ch, users, weights=rt.weights, window=rt.window, now=as_of)
    # Users with an event dated after asOf (a producer may date one up to an hour ahead): as of asOf, from the log.
    ahead = sorted({int(u) for (u,) in ch.rows(DATED_AHEAD_SQL, {"asof": as_of})} & set(metrics))
    metrics.update(compute_user_metrics(ch, ahead, weights=rt.weights, window=rt.window, as_of=as_of))
    growth = follower_growth(rt, as_of)
    out: dict[int, tuple[bool, tuple[int, ...]]] = {}
    for uid in sorted(set(metrics) | set(growth)):
        m = metrics.get(uid)
        values = (
            (m.follower_count, int(m.engagement_score * SCORE_SCALE), m.reaction_count, m.download_count)
            if m is not None
            else (0, 0, 0, 0)
        ) + (growth.get(uid, 0),)
        creator = m is not None and m.upload_count > 0
        if creator or any(values):
            out[uid] = (creator, values)
    return out


def recompute_peers(rt: Runtime) -> JobReport:
    """Recompute every creator's values and the distribution, and switch readers to them."""
    started = time.perf_counter()
    now = clock(rt)
    as_of = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the answers' asOf, to the millisecond
    values = peer_values(rt, as_of)
    generation = secrets.token_hex(8)
    keys = write_generation(rt, generation, as_of, values)
    kept = max(KEPT_INTERVALS * rt.settings.peers_interval_s, MIN_KEPT_S)
    # The expiry instant is on Redis's clock, which applies it (the jobs' clock may be a test's).
    expire_at = datetime.fromtimestamp(server_time_us(rt.redis) / 1e6, UTC) + timedelta(seconds=kept)
    switched, before = switch(rt.redis, generation, keys, as_of, expire_at)
    if switched:
        drop_generation(rt, before.split("|", 1)[0] if before else None)
    else:  # a run that started later switched first: this one's snapshot is older
        drop_generation(rt, generation)
    creators = sum(1 for creator, _ in values.values() if creator)
    mode = "switched" if switched else "not switched: a newer run's snapshot is current"
    seconds = time.perf_counter() - started
    return JobReport("recompute_peers", mode, users=creators, changed=len(values), seconds=seconds)


def write_generation(
    rt: Runtime, generation: str, as_of: datetime, values: dict[int, tuple[bool, tuple[int, ...]]]
) -> list[str]:
    """Write a generation's keys (each with a TTL covering the build, should the run die); returns their names."""
    r = rt.redis
    building_ttl = max(2 * rt.settings.job_time_limit_s, 60)
    value_key = generation_key(generation, "v")
    keys: set[str] = {value_key}
    users = sorted(values)
    for i in range(0, len(users), CHUNK):
        part = users[i : i + CHUNK]
        sets: dict[str, dict[str, int]] = {}
        for uid in part:
            creator, vals = values[uid]
            if not creator:
                continue
            user_band = band(vals[0])
            for name, value in zip(METRICS, vals, strict=True):
                sets.setdefault(generation_key(generation, f"z:{name}"), {})[str(uid)] = value
                sets.setdefault(generation_key(generation, f"z:{name}:{user_band}"), {})[str(uid)] = value
        pipe = r.pipeline(transaction=False)
        pipe.hset(value_key, mapping={str(uid): encode(*values[uid]) for uid in part})
        for key, members in sets.items():
            pipe.zadd(key, members)
        for key in {value_key, *sets}:
            pipe.expire(key, building_ttl)
        pipe.execute()
        keys.update(sets)
    meta_key = generation_key(generation, "meta")
    creators = sum(1 for creator, _ in values.values() if creator)
    pipe = r.pipeline(transaction=False)
    pipe.hset(
        meta_key,
        mapping={
            "asOf": int(as_of.timestamp() * 1000),
            "creators": creators,
            "users": len(values),
            "keys": json.dumps(sorted(keys)),
        },
    )
    pipe.expire(meta_key, building_ttl)
    pipe.execute()
    return [meta_key, *sorted(keys)]


def drop_generation(rt: Runtime, generation: str | None) -> None:
    """Unlink the keys of a generation readers no longer use (its meta lists them)."""
    if not generation:
        return
    meta_key = generation_key(generation, "meta")
    listed: Any = rt.redis.hget(meta_key, "keys")
    keys: Sequence[str] = json.loads(listed) if listed else []
    for i in range(0, len(keys), 100):
        rt.redis.unlink(*keys[i : i + 100])
    rt.redis.unlink(meta_key)
