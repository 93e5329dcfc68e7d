"""User metrics computed from ClickHouse: the read behind every cache miss, the refresher and the jobs.

Every query is idempotent in ``eventId``: state keys take their latest value with ``argMax`` over
``(createdAt, eventId)`` (a duplicate row cannot change a maximum), additive events are grouped by ``eventId``
before summing. So duplicated, replayed or reordered deliveries give the same numbers as one clean delivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from app.core.metrics import (
    ADDITIVE,
    EXCLUDED_USERS_SQL,
    OWNER_STATE_TYPES_SQL,
    REACTION_METRICS,
    SCORE_SCALE,
    WEIGHT_SQL,
    EngagementWeights,
    UserMetrics,
)
from app.stores.clickhouse import ClickHouse, chunked

# Users per metrics query: each bound array stays well inside a server's form-field limit (128 KiB).
USERS_PER_QUERY = 2000

_TOTALS = ["Download", "Generation"]  # the additive types with a field of their own

# The f-strings below splice constant SQL fragments only; every value is a bound parameter.

# -- Current values, from the aggregate tables (sql/0003_read_aggregates.sql) ----------------------------------
# One round trip, three parts (ClickHouse runs them in parallel); every row: (part, user, a, b, c, d, days).
# - actor: following, models, posts, images (my state keys that are on);
# - owner: followers, reactions received, state engagement (keys on entities I own, by others, not excluded);
#   the state tables are read with FINAL: cheapest once their parts are merged (right after a bulk backfill,
#   argMax by version per key is, until the merges catch up);
# - additive: downloads and generations from the per-day buckets without redeliveries, and the (metric, day)
#   buckets that saw some (re-read from the raw log below).
CURRENT_SQL = f"""
SELECT 'actor' AS part, userId AS uid,
       toInt64(countIf(metricType = 'Follow' AND v > 0)) AS a,
       toInt64(countIf(metricType = 'Upload' AND entityType = 'Model' AND v > 0)) AS b,
       toInt64(countIf(metricType = 'Upload' AND entityType = 'Post' AND v > 0)) AS c,
       toInt64(countIf(metricType = 'Upload' AND entityType = 'Image' AND v > 0)) AS d,
       CAST([], 'Array(Tuple(String, Date))') AS days
FROM (
    SELECT userId, metricType, entityType, isOn AS v
    FROM stateByActor FINAL
    WHERE userId IN {{users:Array(Int64)}} AND metricType IN ('Follow', 'Upload')
)
GROUP BY userId
UNION ALL
SELECT 'owner', ownerId,
       toInt64(countIf(metricType = 'Follow' AND v > 0)),
       toInt64(countIf(metricType IN {{reactions:Array(String)}} AND v > 0)),
       toInt64(sumIf({WEIGHT_SQL}, v > 0 AND lastAt >= {{since:DateTime64(3, 'UTC')}})),
       toInt64(0),
       CAST([], 'Array(Tuple(String, Date))')
FROM (
    SELECT ownerId, metricType, isOn AS v, at AS lastAt
    FROM stateByOwner FINAL
    WHERE ownerId IN {{users:Array(Int64)}} AND metricType IN ('Follow', 'ReactionLike', 'ReactionHeart',
                                                               'ReactionLaugh', 'ReactionCry')
      AND userId != ownerId AND userId NOT IN {EXCLUDED_USERS_SQL}
)
GROUP BY ownerId
UNION ALL
SELECT 'additive', ownerId,
       toInt64(sumIf(t, r = u AND metricType = 'Download')),
       toInt64(sumIf(t, r = u AND metricType = 'Generation')),
       toInt64(max(day) >= toDate({{since:DateTime64(3, 'UTC')}})), toInt64(0),
       groupArrayIf((toString(metricType), day), r != u AND metricType IN {{totals:Array(String)}})
FROM (
    SELECT ownerId, metricType, day, sum(total) AS t, sum(rowCount) AS r, uniqExactMerge(events) AS u
    FROM additiveDaily
    WHERE ownerId IN {{users:Array(Int64)}} AND metricType IN {{additive:Array(String)}}
    GROUP BY ownerId, metricType, day
)
GROUP BY ownerId
"""  # noqa: S608

# From the raw log, each event once, in three branches that each use an index: the window's engagement (by owner
# and time), the excluded users' share of the totals, to take off (by actor), and the exact totals of the days whose
# buckets saw redeliveries (by owner and time). Rows: (part, owner, a, b).
_ADDITIVE_EVENTS = """
    SELECT eventId, any(ownerId) AS owner, any(metricType) AS mt, any(metricValue) AS val, any(userId) AS actor,
           any(createdAt) AS at
    FROM entityMetricEvents
    WHERE ownerId IN {{users:Array(Int64)}} AND metricType IN {{additive:Array(String)}} AND {where}
    GROUP BY eventId
"""
ADDITIVE_RAW_SQL = f"""
SELECT 'window', owner, toInt64(sum(val * transform(mt, {{wtypes:Array(String)}}, {{wvalues:Array(Int64)}},
                                                   {{wdefault:Int64}}))), toInt64(0)
FROM ({_ADDITIVE_EVENTS.format(where="createdAt >= {since:DateTime64(3, 'UTC')}")})
WHERE actor != owner AND actor NOT IN {EXCLUDED_USERS_SQL}
GROUP BY owner
UNION ALL
SELECT 'excluded', owner, toInt64(sumIf(val, mt = 'Download')), toInt64(sumIf(val, mt = 'Generation'))
FROM ({_ADDITIVE_EVENTS.format(where=f"userId IN {EXCLUDED_USERS_SQL}")})
GROUP BY owner
UNION ALL
SELECT 'redelivered', owner, toInt64(sumIf(val, mt = 'Download')), toInt64(sumIf(val, mt = 'Generation'))
FROM ({
    _ADDITIVE_EVENTS.format(
        where="createdAt >= {first:DateTime64(3, 'UTC')} AND createdAt < {last:DateTime64(3, 'UTC')} "
        "AND (ownerId, metricType, toDate(createdAt)) IN {redelivered:Array(Tuple(Int64, String, Date))}"
    )
})
GROUP BY owner
"""  # noqa: S608

# -- Values as of an instant, from the raw log (event time; slower: every key is derived again) ----------------
_LATEST_STATE = """
    SELECT entityType, entityId, metricType, userId,
           argMax(metricValue, (createdAt, toString(eventId))) AS v,
           max(createdAt) AS lastAt,
           max(ownerId) AS owner
    FROM entityMetricEvents
    WHERE {where} AND createdAt <= {{asof:DateTime64(3, 'UTC')}}
    GROUP BY entityType, entityId, metricType, userId
"""

ACTOR_ASOF_SQL = f"""
SELECT userId,
       countIf(metricType = 'Follow' AND v > 0),
       countIf(metricType = 'Upload' AND entityType = 'Model' AND v > 0),
       countIf(metricType = 'Upload' AND entityType = 'Post' AND v > 0),
       countIf(metricType = 'Upload' AND entityType = 'Image' AND v > 0)
FROM ({_LATEST_STATE.format(where="userId IN {users:Array(Int64)} AND metricType IN ('Follow', 'Upload')")})
GROUP BY userId
"""  # noqa: S608

# Owner side: a key's state is its latest event among *all* its rows (some rows may predate the knowledge of
# the owner and carry ownerId 0); the key belongs to the owner any of its rows names.
OWNER_STATE_ASOF_SQL = f"""
SELECT owner,
       countIf(metricType = 'Follow' AND v > 0),
       countIf(metricType IN {{reactions:Array(String)}} AND v > 0),
       sumIf({WEIGHT_SQL}, v > 0 AND lastAt >= {{since:DateTime64(3, 'UTC')}})
FROM ({
    _LATEST_STATE.format(
        where=f"metricType IN {OWNER_STATE_TYPES_SQL} AND (entityType, entityId) IN ("
        f"SELECT entityType, entityId FROM entityMetricEvents "
        f"WHERE ownerId IN {{users:Array(Int64)}} AND metricType IN {OWNER_STATE_TYPES_SQL})"
    )
})
WHERE owner IN {{users:Array(Int64)}} AND userId != owner AND userId NOT IN {EXCLUDED_USERS_SQL}
GROUP BY owner
"""  # noqa: S608

OWNER_ADDITIVE_ASOF_SQL = f"""
SELECT owner,
       sumIf(val, mt = 'Download'),
       sumIf(val, mt = 'Generation'),
       sumIf(val * w, actor != owner AND at >= {{since:DateTime64(3, 'UTC')}})
FROM (
    SELECT eventId, any(ownerId) AS owner, any(userId) AS actor, any(metricType) AS mt,
           any(metricValue) AS val, any(createdAt) AS at, any({WEIGHT_SQL}) AS w
    FROM entityMetricEvents
    WHERE ownerId IN {{users:Array(Int64)}} AND metricType IN {{additive:Array(String)}}
      AND userId NOT IN {EXCLUDED_USERS_SQL} AND createdAt <= {{asof:DateTime64(3, 'UTC')}}
    GROUP BY eventId
)
GROUP BY owner
"""  # noqa: S608


def compute_user_metrics(
    ch: ClickHouse,
    user_ids: Iterable[int],
    *,
    weights: EngagementWeights,
    window: timedelta,
    as_of: datetime | None = None,
    now: datetime | None = None,
) -> dict[int, UserMetrics]:
    """Every metric of ``user_ids`` (rank excluded; docs/architecture.md, "Metrics"), now or as of ``as_of``.

    Current values come from the aggregate tables; values as of an instant are derived from the raw log. ``now``:
    the instant the engagement window ends at (default: this host's clock; the snapshot job passes its own).
    """
    users = sorted(set(user_ids))
    if not users:
        return {}
    if len(users) > USERS_PER_QUERY:  # keep each bound array well inside a server's form-field limit
        out: dict[int, UserMetrics] = {}
        for part in chunked(users, USERS_PER_QUERY):
            out.update(compute_user_metrics(ch, part, weights=weights, window=window, as_of=as_of, now=now))
        return out
    if as_of is not None:
        return _compute_as_of(ch, users, weights=weights, window=window, as_of=as_of.astimezone(UTC))
    now = now or datetime.now(UTC)
    params: dict[str, object] = {
        "users": users,
        "since": now - window,
        "reactions": REACTION_METRICS,
        "additive": ADDITIVE,
        "totals": _TOTALS,
        **weights.params(),
    }
    out = {uid: UserMetrics() for uid in users}
    scores: dict[int, int] = {}
    redelivered: list[tuple[int, str, date]] = []
    with_additive: list[int] = []  # owners with additive events: the raw log has their exact share to add
    for part, uid, a, b, c, d, days in ch.rows(CURRENT_SQL, params):
        m = out[int(uid)]
        if part == "actor":
            _apply_actor_side(out, [(uid, a, b, c, d)])
        elif part == "owner":
            scores.update(_apply_owner_state(out, [(uid, a, b, c)]))
        else:
            m.download_count += int(a)
            m.generation_count += int(b)
            with_additive.append(int(uid))
            redelivered.extend((int(uid), str(metric), day) for metric, day in days)
    if not with_additive:
        _apply_scores(out, scores)
        return out
    params["users"] = sorted(with_additive)
    days = [d for _, _, d in redelivered]
    first = datetime.combine(min(days), time.min, UTC) if days else now
    last = datetime.combine(max(days), time.min, UTC) + timedelta(days=1) if days else now
    raw_params = {**params, "redelivered": redelivered, "first": first, "last": last}
    for part, owner, a, b in ch.rows(ADDITIVE_RAW_SQL, raw_params):
        m = out[int(owner)]
        if part == "window":
            scores[int(owner)] = scores.get(int(owner), 0) + int(a)
        elif part == "excluded":
            m.download_count -= int(a)
            m.generation_count -= int(b)
        else:
            m.download_count += int(a)
            m.generation_count += int(b)
    _apply_scores(out, scores)
    return out


def _compute_as_of(
    ch: ClickHouse, users: list[int], *, weights: EngagementWeights, window: timedelta, as_of: datetime
) -> dict[int, UserMetrics]:
    params: dict[str, object] = {
        "users": users,
        "asof": as_of,
        "since": as_of - window,
        "reactions": REACTION_METRICS,
        "additive": ADDITIVE,
        **weights.params(),
    }
    out = {uid: UserMetrics() for uid in users}
    _apply_actor_side(out, ch.rows(ACTOR_ASOF_SQL, params))
    scores = _apply_owner_state(out, ch.rows(OWNER_STATE_ASOF_SQL, params))
    for owner, downloads, generations, score in ch.rows(OWNER_ADDITIVE_ASOF_SQL, params):
        m = out[int(owner)]
        m.download_count, m.generation_count = int(downloads), int(generations)
        scores[int(owner)] = scores.get(int(owner), 0) + int(score)
    _apply_scores(out, scores)
    return out


def _apply_actor_side(out: dict[int, UserMetrics], rows: list[tuple[Any, ...]]) -> None:
    for uid, following, models, posts, images in rows:
        m = out[int(uid)]
        m.following_count = int(following)
        m.model_count, m.post_count, m.image_count = int(models), int(posts), int(images)
        m.upload_count = m.model_count + m.post_count + m.image_count


def _apply_owner_state(out: dict[int, UserMetrics], rows: list[tuple[Any, ...]]) -> dict[int, int]:
    scores: dict[int, int] = {}
    for owner, followers, reactions, score in rows:
        m = out[int(owner)]
        m.follower_count, m.reaction_count = int(followers), int(reactions)
        scores[int(owner)] = int(score)
    return scores


def _apply_scores(out: dict[int, UserMetrics], scores: Mapping[int, int]) -> None:
    for uid, score in scores.items():
        out[uid].engagement_score = Decimal(score) / SCORE_SCALE
