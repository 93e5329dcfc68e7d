"""The baseline of ``bench insights``: each insight computed at query time from the user's raw events, fetched
from the log and replayed in Python, as product-analytics tools compute them (no aggregation in the engine, no
table kept by a job). Same definitions, same answers; only the cost differs."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core.events import as_utc
from app.core.metrics import EXCLUDED_USERS_SQL
from app.insights.requests import InsightRequest
from app.stores.clickhouse import ClickHouse

_FOLLOWS_SQL = f"""
SELECT userId, createdAt, toString(eventId), metricValue FROM entityMetricEvents
WHERE entityType = 'User' AND entityId = {{user:Int64}} AND metricType = 'Follow'
  AND createdAt <= {{asof:DateTime64(3, 'UTC')}} AND userId != {{user:Int64}} AND userId NOT IN {EXCLUDED_USERS_SQL}
"""  # noqa: S608
_RECEIVED_SQL = f"""
SELECT entityType, entityId, metricType, userId, createdAt, toString(eventId), metricValue FROM entityMetricEvents
WHERE ownerId = {{user:Int64}} AND createdAt <= {{asof:DateTime64(3, 'UTC')}}
  AND userId != {{user:Int64}} AND userId NOT IN {EXCLUDED_USERS_SQL}
  AND metricType IN ('ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry', 'Download', 'Generation',
                     'Comment')
"""  # noqa: S608


def _follow_history(ch: ClickHouse, request: InsightRequest) -> dict[int, list[tuple[datetime, bool]]]:
    """Each follower's follow states in event order (duplicates dropped)."""
    seen: set[str] = set()
    by_follower: dict[int, list[tuple[datetime, str, bool]]] = defaultdict(list)
    for follower, at, event_id, value in ch.rows(_FOLLOWS_SQL, {"user": request.user_id, "asof": request.as_of}):
        if event_id not in seen:
            seen.add(event_id)
            by_follower[int(follower)].append((as_utc(at), event_id, value > 0))
    return {f: [(at, on) for at, _, on in sorted(events)] for f, events in by_follower.items()}


def _state_at(history: list[tuple[datetime, bool]], t: datetime) -> bool:
    on = False
    for at, state in history:
        if at > t:
            break
        on = state
    return on


def growth(ch: ClickHouse, request: InsightRequest) -> list[int]:
    """Followers at the end of each day of the range: each follower's day-end states, swept day by day."""
    assert request.start is not None and request.end is not None  # noqa: S101
    change: dict[Any, int] = defaultdict(int)
    for h in _follow_history(ch, request).values():
        day_end: dict[Any, bool] = {}
        for at, on in h:
            day_end[at.astimezone(request.zone).date()] = on
        before = False
        for day in sorted(day_end):
            if day_end[day] != before:
                change[day] += 1 if day_end[day] else -1
                before = day_end[day]
    followers = sum(n for day, n in change.items() if day < request.start)
    out, day = [], request.start
    while day <= request.end:
        followers += change.get(day, 0)
        out.append(followers)
        day += timedelta(days=1)
    return out


def retention(ch: ClickHouse, request: InsightRequest) -> dict[str, int]:
    """Cohort sizes by week (the retained series is the same replay, per week)."""
    sizes: dict[str, int] = defaultdict(int)
    for h in _follow_history(ch, request).values():
        first = next((at for at, on in h if on), None)
        if first is not None:
            local = first.astimezone(request.zone).date()
            sizes[(local - timedelta(days=local.weekday())).isoformat()] += 1
    return sizes


def received(ch: ClickHouse, request: InsightRequest, lo: datetime, hi: datetime) -> dict[str, int]:
    """Reaction turn-ons and additive totals in ``[lo, hi]``, by follow state at the event's instant."""
    follows = _follow_history(ch, request)
    keys: dict[tuple[Any, ...], list[tuple[datetime, str, int, int]]] = defaultdict(list)
    seen: set[str] = set()
    out: dict[str, int] = defaultdict(int)
    for etype, eid, metric, actor, at, event_id, value in ch.rows(
        _RECEIVED_SQL, {"user": request.user_id, "asof": min(hi, request.as_of)}
    ):
        if event_id in seen:
            continue
        seen.add(event_id)
        at = as_utc(at)
        if metric.startswith("Reaction"):
            keys[(etype, eid, metric, actor)].append((at, event_id, value, actor))
        elif lo <= at <= hi:
            out[f"{metric}:{_state_at(follows.get(int(actor), []), at)}"] += int(value)
    for events in keys.values():
        on = False
        for at, _, value, actor in sorted(events):
            if value > 0 and not on and lo <= at <= hi:
                out[f"reaction:{_state_at(follows.get(int(actor), []), at)}"] += 1
            on = value > 0
    return out


def audience(ch: ClickHouse, request: InsightRequest) -> dict[str, int]:
    assert request.start is not None and request.end is not None  # noqa: S101
    lo = datetime.combine(request.start, datetime.min.time(), request.zone)
    hi = datetime.combine(request.end + timedelta(days=1), datetime.min.time(), request.zone)
    return received(ch, request, lo.astimezone(UTC), hi.astimezone(UTC) - timedelta(milliseconds=1))


def activity(ch: ClickHouse, request: InsightRequest) -> dict[str, int]:
    lo = request.as_of - timedelta(days=request.days) + timedelta(milliseconds=1)
    return received(ch, request, lo, request.as_of)
