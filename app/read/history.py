"""A user's metric over time: follower growth, uploads, reactions received, downloads, the engagement trend.

Each point is the metric's value at the end of its bucket (or at ``end`` for the last, partial one), by event
time, with the same definitions as the current values (docs/architecture.md, "The metrics"):

- state counts: per key and bucket, the key's state at the end of the bucket (argMax over ``(createdAt,
  eventId)``); the change from the key's previous bucket is summed per bucket and accumulated, so buckets without
  events cost nothing and the query reads only the user's own keys (primary key or projection ranges);
- additive totals: distinct events per bucket, accumulated;
- ``engagementScore``: the recorded values (the score job's trend, one point per changed score per run, and the
  ``Engagement`` events of ``record_engagement``), the latest at each bucket's end, carried forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from app.core.errors import ValidationError
from app.core.events import ENGAGEMENT_SCALE, REACTION_TYPES, as_utc
from app.core.metrics import EXCLUDED_USERS_SQL
from app.stores.clickhouse import ClickHouse

INTERVALS = {"hour": "toStartOfHour", "day": "toStartOfDay", "week": "toMonday", "month": "toStartOfMonth"}

_NOT_EXCLUDED = f"userId != {{user:Int64}} AND userId NOT IN {EXCLUDED_USERS_SQL}"
_REACTIONS = ", ".join(f"'{m.value}'" for m in REACTION_TYPES.values())
_STATE_FILTERS = {
    "followerCount": f"entityType = 'User' AND entityId = {{user:Int64}} AND metricType = 'Follow' AND {_NOT_EXCLUDED}",
    "followingCount": "userId = {user:Int64} AND metricType = 'Follow'",
    "modelCount": "userId = {user:Int64} AND metricType = 'Upload' AND entityType = 'Model'",
    "postCount": "userId = {user:Int64} AND metricType = 'Upload' AND entityType = 'Post'",
    "imageCount": "userId = {user:Int64} AND metricType = 'Upload' AND entityType = 'Image'",
    "uploadCount": "userId = {user:Int64} AND metricType = 'Upload' AND entityType IN ('Model', 'Post', 'Image')",
    "reactionCount": f"ownerId = {{user:Int64}} AND metricType IN ({_REACTIONS}) AND {_NOT_EXCLUDED}",
}
_ADDITIVE_FILTERS = {
    "downloadCount": f"ownerId = {{user:Int64}} AND metricType = 'Download' AND userId NOT IN {EXCLUDED_USERS_SQL}",
    "generationCount": f"ownerId = {{user:Int64}} AND metricType = 'Generation' AND userId NOT IN {EXCLUDED_USERS_SQL}",
}
METRICS = (*_STATE_FILTERS, *_ADDITIVE_FILTERS, "engagementScore")

# {bucket} is a whitelisted function name, {where} a constant filter above; values are bound parameters.
_STATE_SQL = """
SELECT bucket, sum(delta)
FROM (
    SELECT bucket, s - lagInFrame(s, 1, 0) OVER (PARTITION BY entityType, entityId, metricType, userId ORDER BY bucket
                                                 ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS delta
    FROM (
        SELECT entityType, entityId, metricType, userId, {bucket}(createdAt) AS bucket,
               toInt64(argMax(metricValue, (createdAt, toString(eventId))) > 0) AS s
        FROM entityMetricEvents
        WHERE {where} AND createdAt <= {{end:DateTime64(3, 'UTC')}}
        GROUP BY entityType, entityId, metricType, userId, bucket
    )
)
GROUP BY bucket
HAVING sum(delta) != 0
ORDER BY bucket
"""

_ADDITIVE_SQL = """
SELECT {bucket}(at) AS bucket, sum(val)
FROM (
    SELECT eventId, any(createdAt) AS at, any(metricValue) AS val
    FROM entityMetricEvents
    WHERE {where} AND createdAt <= {{end:DateTime64(3, 'UTC')}}
    GROUP BY eventId
)
GROUP BY bucket
ORDER BY bucket
"""

# The producers' Engagement events and the score job's trend (engagementTrend, sql/0006), latest per bucket.
_GAUGE_SQL = """
SELECT {bucket}(at) AS bucket, argMax(v, (at, id))
FROM (
    SELECT createdAt AS at, toString(eventId) AS id, metricValue AS v
    FROM entityMetricEvents
    WHERE entityType = 'User' AND entityId = {{user:Int64}} AND metricType = 'Engagement'
      AND createdAt <= {{end:DateTime64(3, 'UTC')}}
    UNION ALL
    SELECT computedAt, '', score
    FROM engagementTrend
    WHERE userId = {{user:Int64}} AND computedAt <= {{end:DateTime64(3, 'UTC')}}
)
GROUP BY bucket
ORDER BY bucket
"""


@dataclass(frozen=True)
class HistoryPoint:
    at: datetime  # start of the bucket
    value: int | Decimal  # at the end of the bucket (or at ``end``)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "value": float(self.value) if isinstance(self.value, Decimal) else self.value,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HistoryPoint:
        raw = data["value"]
        value: int | Decimal = raw if isinstance(raw, int) else Decimal(str(raw))
        return cls(datetime.fromisoformat(data["at"]), value)


def _buckets(start: datetime, end: datetime, interval: str) -> Iterator[datetime]:
    at = _floor(start, interval)
    while at <= end:
        yield at
        at = _next(at, interval)


def _floor(at: datetime, interval: str) -> datetime:
    if interval == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day


def _next(at: datetime, interval: str) -> datetime:
    if interval == "hour":
        return at + timedelta(hours=1)
    if interval == "week":
        return at + timedelta(days=7)
    if interval == "month":
        return (at.replace(day=28) + timedelta(days=4)).replace(day=1)
    return at + timedelta(days=1)


def check_request(metric: str, start: datetime, end: datetime, interval: str) -> tuple[datetime, datetime]:
    """Refuse a history request that cannot be answered (before it travels anywhere); returns UTC bounds."""
    if interval not in INTERVALS:
        raise ValidationError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    if metric not in METRICS:
        raise ValidationError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    start, end = as_utc(start), as_utc(end)
    if end < start:
        raise ValidationError("end is before start")
    if interval == "hour" and end - start > timedelta(days=31):
        raise ValidationError("hourly history covers at most 31 days")
    return start, end


def metric_history(
    ch: ClickHouse, user_id: int, metric: str, start: datetime, end: datetime, interval: str = "day"
) -> list[HistoryPoint]:
    """The value of ``metric`` for ``user_id`` at the end of every ``interval`` bucket from ``start`` to ``end``."""
    start, end = check_request(metric, start, end, interval)
    params = {"user": user_id, "end": end}
    bucket = INTERVALS[interval]
    if metric == "engagementScore":
        return _carry_latest(ch.rows(_GAUGE_SQL.format(bucket=bucket), params), start, end, interval)
    if metric in _STATE_FILTERS:
        sql = _STATE_SQL.format(bucket=bucket, where=_STATE_FILTERS[metric])
    else:
        sql = _ADDITIVE_SQL.format(bucket=bucket, where=_ADDITIVE_FILTERS[metric])
    deltas = {as_utc(b): int(d) for b, d in ch.rows(sql, params)}
    first = _floor(start, interval)
    total = sum(d for b, d in deltas.items() if b < first)
    out = []
    for at in _buckets(start, end, interval):
        total += deltas.get(at, 0)
        out.append(HistoryPoint(at, total))
    return out


def _carry_latest(rows: list[tuple[Any, ...]], start: datetime, end: datetime, interval: str) -> list[HistoryPoint]:
    latest = {as_utc(b): Decimal(int(v)) / ENGAGEMENT_SCALE for b, v in rows}
    first = _floor(start, interval)
    before = [b for b in latest if b < first]
    value = latest[max(before)] if before else Decimal(0)
    out = []
    for at in _buckets(start, end, interval):
        value = latest.get(at, value)
        out.append(HistoryPoint(at, value))
    return out
