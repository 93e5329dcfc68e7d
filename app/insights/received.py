"""Audience and activity: the engagement a creator received, from the log.

Both count the same two things on the creator's entities (events whose ``ownerId`` is the creator), by actors who
count (not excluded, not the creator):

- reactions *turned on*: an event of a reaction key after which the key is on while it was off before it (its
  previous event in ``(createdAt, eventId)`` order was off, or it had none). A redelivered event follows its twin
  (same instant, same id), finds the key already on and adds nothing; a late event is placed where it belongs.
  To know the state before a range, the query reads the earlier events of the keys with an event in the range
  only;
- additive events (downloads; for activity also generations and comments): each event id once, its value.

Audience splits them by the actor's follow of the creator at the instant of the event (an ``ASOF`` join on the
creator's follow events, which are one range of the log's primary key); activity places them on a weekday x hour
grid in the request's zone.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from app.core.metrics import EXCLUDED_USERS_SQL
from app.insights.requests import InsightRequest
from app.stores.clickhouse import ClickHouse

_REACTIONS = "('ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry')"

# The creator's reaction events on their entities, by actors who count, in ``[lo, hi]``: the keys to follow.
_COUNTED = f"""
    ownerId = {{user:Int64}} AND userId != {{user:Int64}} AND userId NOT IN {EXCLUDED_USERS_SQL}
"""  # noqa: S608

# (kind, actor, at, n) of everything received in ``[lo, hi]``: reaction turn-ons (kind 'reaction', n = 1) and
# additive events of the types ``additive`` (kind 'additive', n = value).
RECEIVED_SQL = f"""
SELECT 'reaction' AS kind, userId AS actor, createdAt AS at, toInt64(1) AS n
FROM (
    SELECT userId, createdAt, on,
           lagInFrame(on, 1, toUInt8(0)) OVER (PARTITION BY entityType, entityId, metricType, userId
                                               ORDER BY createdAt, eid ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
               AS prev
    FROM (
        SELECT entityType, entityId, metricType, userId, createdAt, toString(eventId) AS eid,
               toUInt8(metricValue > 0) AS on
        FROM entityMetricEvents
        WHERE metricType IN {_REACTIONS} AND createdAt <= {{hi:DateTime64(3, 'UTC')}} AND {_COUNTED}
          AND (entityType, entityId, metricType, userId) IN (
              SELECT entityType, entityId, metricType, userId FROM entityMetricEvents
              WHERE metricType IN {_REACTIONS} AND ownerId = {{user:Int64}}
                AND createdAt >= {{lo:DateTime64(3, 'UTC')}} AND createdAt <= {{hi:DateTime64(3, 'UTC')}})
    )
)
WHERE on = 1 AND prev = 0 AND createdAt >= {{lo:DateTime64(3, 'UTC')}}
UNION ALL
SELECT 'additive', actor, at, val
FROM (
    SELECT eventId, any(userId) AS actor, any(createdAt) AS at, any(metricValue) AS val
    FROM entityMetricEvents
    WHERE metricType IN {{additive:Array(String)}} AND ownerId = {{user:Int64}}
      AND createdAt >= {{lo:DateTime64(3, 'UTC')}} AND createdAt <= {{hi:DateTime64(3, 'UTC')}}
    GROUP BY eventId
)
WHERE actor != {{user:Int64}} AND actor NOT IN {EXCLUDED_USERS_SQL}
"""  # noqa: S608

# Audience: the received events split by kind and by the actor's follow of the creator at the event's instant
# (the state after the follower's latest follow event at or before it; one row per instant, the latest by id).
AUDIENCE_SQL = f"""
SELECT r.kind, f.on AS follows, toInt64(sum(r.n)) AS n
FROM ({RECEIVED_SQL}) AS r
ASOF LEFT JOIN (
    SELECT userId AS follower, createdAt AS at, toUInt8(argMax(metricValue, toString(eventId)) > 0) AS on
    FROM entityMetricEvents
    WHERE entityType = 'User' AND entityId = {{user:Int64}} AND metricType = 'Follow'
      AND createdAt <= {{hi:DateTime64(3, 'UTC')}}
    GROUP BY follower, at
) AS f ON r.actor = f.follower AND r.at >= f.at
GROUP BY r.kind, follows
"""  # noqa: S608

# Activity: the received events on a (weekday, hour) grid in the request's zone; weekday 1 is Monday.
ACTIVITY_SQL = f"""
SELECT toDayOfWeek(at, 0, {{tz:String}}) AS weekday, toHour(at, {{tz:String}}) AS hour, toInt64(sum(n)) AS n
FROM ({RECEIVED_SQL})
WHERE at > {{after:DateTime64(3, 'UTC')}}
GROUP BY weekday, hour
"""  # noqa: S608


def _day_start(request: InsightRequest, day: Any) -> datetime:
    """The first instant of ``day`` in the request's zone (a day starting in a DST gap starts when it exists)."""
    return datetime.combine(day, time.min, request.zone)


def audience(ch: ClickHouse, request: InsightRequest) -> dict[str, Any]:
    """``{"userId", "reactions": {"followers", "nonFollowers"}, "downloads": {...}}`` over ``start``..``end``."""
    assert request.start is not None and request.end is not None  # noqa: S101 - checked by InsightRequest
    lo = _day_start(request, request.start)
    hi = min(_day_start(request, request.end + timedelta(days=1)) - timedelta(milliseconds=1), request.as_of)
    out = {"reactions": {"followers": 0, "nonFollowers": 0}, "downloads": {"followers": 0, "nonFollowers": 0}}
    if hi >= lo:
        params = {"user": request.user_id, "lo": lo, "hi": hi, "additive": ["Download"]}
        for kind, follows, n in ch.rows(AUDIENCE_SQL, params):
            part = out["reactions" if kind == "reaction" else "downloads"]
            part["followers" if follows else "nonFollowers"] += int(n)
    return {"userId": request.user_id, **out}


BEST_HOURS = 3


def activity(ch: ClickHouse, request: InsightRequest) -> dict[str, Any]:
    """``{"userId", "tz", "grid": 7 x 24 counts (Monday first), "bestHours": [{"weekday", "hour", "count"}]}``
    over ``(asOf - days, asOf]``."""
    after = request.as_of - timedelta(days=request.days)
    params = {
        "user": request.user_id,
        "lo": after,
        "hi": request.as_of,
        "after": after,
        "tz": request.tz,
        "additive": ["Download", "Generation", "Comment"],
    }
    grid = [[0] * 24 for _ in range(7)]
    for weekday, hour, n in ch.rows(ACTIVITY_SQL, params):
        grid[int(weekday) - 1][int(hour)] += int(n)
    cells = sorted(
        ((count, weekday, hour) for weekday, row in enumerate(grid) for hour, count in enumerate(row) if count > 0),
        key=lambda cell: (-cell[0], cell[1], cell[2]),
    )
    best = [{"weekday": w, "hour": h, "count": n} for n, w, h in cells[:BEST_HOURS]]
    return {"userId": request.user_id, "tz": request.tz, "grid": grid, "bestHours": best}
