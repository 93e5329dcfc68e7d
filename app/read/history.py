"""A user's metric over time: follower growth, uploads, reactions received, downloads, the engagement trend.

Each point is the metric's value at the end of its bucket (or at ``end`` for the last, partial one), by event
time, with the same definitions as the current values (docs/architecture.md, "The metrics"):

- state counts: per key and bucket, the key's state at the end of the bucket (argMax over ``(createdAt,
  eventId)``); the change from the key's previous bucket is summed per bucket and accumulated, so buckets without
  events cost nothing and the query reads only the user's own keys (primary key or projection ranges);
- additive totals: distinct events per bucket, accumulated;
  the state counts come from the hourly ``metricTimeline`` (``app.jobs.timeline``) where it is current: the user's
  hourly sums up to the hour of ``end``, corrected by the keys that changed since the table's cut or have events in
  that last hour (their changes from the log, less their stored ones); otherwise, from the log as above;
- ``engagementScore``: the recorded values (the score job's trend, one point per changed score per run, and the
  ``Engagement`` events of ``record_engagement``), the latest at each bucket's end, carried forward.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.core.errors import ValidationError
from app.core.events import ENGAGEMENT_SCALE, REACTION_TYPES, as_utc
from app.core.metrics import EXCLUDED_USERS_SQL
from app.derived.changelog import ARRIVALS_KEPT, EPOCH, EXCLUDED_FINGERPRINT_SQL, INFLIGHT_MARGIN
from app.derived.tables import CUT_WHERE
from app.stores.clickhouse import ClickHouse, chunked

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
# The rows of ``metricTimeline`` each state count sums.
_TIMELINE_METRICS = {m: [m] for m in _STATE_FILTERS} | {"uploadCount": ["modelCount", "postCount", "imageCount"]}

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


# From the hourly timeline. First round trip: its cut and excluded set (with the current one, to check), the user's
# sums before the hour of ``end`` per bucket (whole days before ``day``, hours from there on), and the keys whose
# changes must be read from the log: those with rows since the cut (less the in-flight margin) or with events in
# the hour of ``end``.
_TIMELINE_SQL = f"""
SELECT 'cut' AS part, toDateTime(0, 'UTC') AS at, argMax(delta, version) AS value, argMax(note, version) AS note,
       '' AS t, 0 AS id, 0 AS actor
FROM metricTimeline WHERE {CUT_WHERE}
UNION ALL
SELECT 'excluded', toDateTime(0, 'UTC'), 0, fp, '', 0, 0
FROM ({EXCLUDED_FINGERPRINT_SQL})
UNION ALL
SELECT 'delta', toDateTime({{bucket}}(hour), 'UTC') AS b, sum(d), '', '', 0, 0
FROM (
    SELECT metric, kind, hour, argMax(delta, version) AS d FROM metricTimeline
    WHERE subject = {{{{user:Int64}}}} AND metric IN {{{{metrics:Array(String)}}}}
      AND ((kind = 'day' AND hour < {{{{day:DateTime('UTC')}}}})
           OR (kind = 'cell' AND hour >= {{{{day:DateTime('UTC')}}}} AND hour < {{{{hour:DateTime('UTC')}}}}))
    GROUP BY metric, kind, hour
)
GROUP BY b
UNION ALL
SELECT 'key', least(min(h0), {{{{hour:DateTime('UTC')}}}}), 0, metricType, entityType, entityId, userId
FROM (
    SELECT entityType, entityId, metricType, userId, toDateTime(toStartOfHour(createdAt), 'UTC') AS h0
    FROM eventArrivals
    WHERE insertedAt > fromUnixTimestamp64Milli(
            (SELECT argMax(delta, version) FROM metricTimeline WHERE {CUT_WHERE})
            - {{{{margin_ms:Int64}}}}, 'UTC')
      AND {{where}}
    UNION ALL
    SELECT entityType, entityId, metricType, userId, {{{{hour:DateTime('UTC')}}}} FROM entityMetricEvents
    WHERE {{where}} AND createdAt >= {{{{hour:DateTime('UTC')}}}} AND createdAt <= {{{{end:DateTime64(3, 'UTC')}}}}
)
GROUP BY metricType, entityType, entityId, userId
"""  # noqa: S608
# Second round trip, for those keys: their events from the first hour they changed in (``h0``, at most the hour of
# ``end``) to ``end``, and their stored changes before the hour of ``end``. A key's state before ``h0`` is the sum of
# its stored changes there (nothing that arrived since changed those hours); its changes from ``h0`` on are derived
# from its events, and replace the stored ones.
_CORRECTION_SQL = """
SELECT 'event', metricType, entityType, entityId, userId, createdAt, toString(eventId), metricValue
FROM entityMetricEvents
WHERE {where} AND (metricType, entityType, entityId, userId) IN {{keys:Array(Tuple(String, String, Int64, Int64))}}
  AND createdAt >= {{since:DateTime('UTC')}} AND createdAt <= {{end:DateTime64(3, 'UTC')}}
UNION ALL
SELECT 'stored', keyType, entityType, entityId, actor, hour, '', argMax(delta, version)
FROM metricTimeline
WHERE subject = {{user:Int64}} AND metric IN {{metrics:Array(String)}} AND kind = 'key'
  AND (keyType, entityType, entityId, actor) IN {{keys:Array(Tuple(String, String, Int64, Int64))}}
  AND hour < {{hour:DateTime('UTC')}}
GROUP BY metric, keyType, entityType, entityId, actor, hour
"""  # noqa: S608


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
    ch: ClickHouse,
    user_id: int,
    metric: str,
    start: datetime,
    end: datetime,
    interval: str = "day",
    *,
    timeline: bool = True,
) -> list[HistoryPoint]:
    """The value of ``metric`` for ``user_id`` at the end of every ``interval`` bucket from ``start`` to ``end``
    (state counts from the hourly timeline where it is current, unless ``timeline`` is false)."""
    start, end = check_request(metric, start, end, interval)
    params = {"user": user_id, "end": end}
    bucket = INTERVALS[interval]
    if metric == "engagementScore":
        return _carry_latest(ch.rows(_GAUGE_SQL.format(bucket=bucket), params), start, end, interval)
    if metric in _STATE_FILTERS:
        deltas = _timeline_deltas(ch, user_id, metric, start, end, interval) if timeline else None
        if deltas is not None:
            return _accumulate(deltas, start, end, interval)
        sql = _STATE_SQL.format(bucket=bucket, where=_STATE_FILTERS[metric])
    else:
        sql = _ADDITIVE_SQL.format(bucket=bucket, where=_ADDITIVE_FILTERS[metric])
    return _accumulate({as_utc(b): int(d) for b, d in ch.rows(sql, params)}, start, end, interval)


def _timeline_deltas(
    ch: ClickHouse, user_id: int, metric: str, start: datetime, end: datetime, interval: str
) -> dict[datetime, int] | None:
    """The change of ``metric`` per bucket up to ``end`` from ``metricTimeline``; None where the table is not
    current (not built yet, built with another excluded set, or its cut older than the changelog keeps)."""
    hour = end.replace(minute=0, second=0, microsecond=0)
    params: dict[str, Any] = {
        "user": user_id,
        "metrics": _TIMELINE_METRICS[metric],
        "end": end,
        "hour": hour,
        # Whole days up to the day of ``end``, hours from there; an hourly series needs hours from its first day.
        "day": _floor(min(start, hour) if interval == "hour" else hour, "day"),
        "margin_ms": int(INFLIGHT_MARGIN.total_seconds() * 1000),
    }
    where, bucket = _STATE_FILTERS[metric], INTERVALS[interval]
    rows = ch.rows(_TIMELINE_SQL.format(where=where, bucket=bucket), params)
    cut = [(int(v), note) for part, _, v, note, *_ in rows if part == "cut"]
    excluded = [note for part, _, _, note, *_ in rows if part == "excluded"]
    if not cut or not cut[0][0] or [cut[0][1]] != excluded:
        return None
    if EPOCH + timedelta(milliseconds=cut[0][0]) < datetime.now(UTC) - ARRIVALS_KEPT:
        return None  # the changelog no longer holds every key changed since
    deltas: dict[datetime, int] = {}
    for part, at, value, *_ in rows:
        if part == "delta":
            deltas[as_utc(at)] = deltas.get(as_utc(at), 0) + int(value)
    first_hours = {(note, t, int(i), int(a)): as_utc(at) for part, at, _, note, t, i, a in rows if part == "key"}
    keys = list(first_hours)
    for some in chunked(keys):
        some_hours = {k: first_hours[k] for k in some}
        fix = ch.rows(
            _CORRECTION_SQL.format(where=where), {**params, "keys": list(some), "since": min(some_hours.values())}
        )
        for hour, change in _key_corrections(fix, some_hours, params["hour"]).items():
            first = _floor(hour, interval)
            deltas[first] = deltas.get(first, 0) + change
    return deltas


def _key_corrections(
    rows: list[tuple[Any, ...]], first_hours: dict[tuple[str, str, int, int], datetime], end_hour: datetime
) -> dict[datetime, int]:
    """Per hour, the keys' changes derived from their events from their first changed hour on, less the stored
    changes they replace."""
    stored: dict[tuple[str, str, int, int], list[tuple[datetime, int]]] = defaultdict(list)
    events: dict[tuple[str, str, int, int], list[tuple[datetime, str, int]]] = defaultdict(list)
    for src, key_type, entity_type, entity_id, actor, at, event_id, value in rows:
        key = (str(key_type), str(entity_type), int(entity_id), int(actor))
        if src == "stored":
            stored[key].append((as_utc(at), int(value)))
        else:
            events[key].append((as_utc(at), str(event_id), int(value)))
    out: dict[datetime, int] = defaultdict(int)
    for key, h0 in first_hours.items():
        state = 0
        for hour, delta in stored.get(key, []):
            if hour < h0:
                state += delta  # the key's state at the end of the hour before h0
            elif hour < end_hour:
                out[hour] -= delta  # replaced below
        latest: dict[datetime, tuple[datetime, str, int]] = {}
        for at, event_id, value in events.get(key, []):
            hour = at.replace(minute=0, second=0, microsecond=0)
            if hour >= h0 and (hour not in latest or (at, event_id) > latest[hour][:2]):
                latest[hour] = (at, event_id, value)
        for hour in sorted(latest):
            on = int(latest[hour][2] > 0)
            out[hour] += on - state
            state = on
    return out


def _accumulate(deltas: dict[datetime, int], start: datetime, end: datetime, interval: str) -> list[HistoryPoint]:
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
