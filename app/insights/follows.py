"""Growth and retention: a creator's followers over time, from the creator's follow rows.

A follow is a state key ``(User, creator, Follow, follower)``: its state at an instant is its latest event by
``(createdAt, eventId)`` at or before that instant. The follow rows come from ``followHistory`` (each key's changes)
with the keys changed since its cut read from the log, or from the log alone (``app.insights.histories``):

- growth takes each follower's state at the end of every day with an event (the latest of that day) and compares it
  with the same follower's previous such day: on after off is a gain, off after on a loss; a follow and an unfollow
  inside one day are neither, because only the end of the day counts. The number of followers at the end of a day
  is the sum of the gains and losses up to it, so ``followers(d) = followers(d-1) + gained(d) - lost(d)`` holds by
  construction and equals ``followerCount`` as of that instant.
- retention takes each follower's rows in order once: the cohort is the week of the first row that turned the
  follow on, and the follower counts as retained k weeks later when the state after their last row up to that
  week is on.

Excluded users' follows and a creator's follow of themself count for nobody, as in the metrics.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from app.insights import histories
from app.insights.requests import InsightRequest
from app.stores.clickhouse import ClickHouse

# (day, gained, lost) for every day with a change, up to ``end``: each follower's state at the end of each day with
# an event, against their previous such day. ``{rows}``: the follow rows (``app.insights.histories``).
GROWTH_SQL = """
SELECT day, toInt64(countIf(state = 1)) AS gained, toInt64(countIf(state = 0)) AS lost
FROM (
    SELECT day, state,
           lagInFrame(state, 1, toUInt8(0)) OVER (PARTITION BY follower ORDER BY day
                                                  ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev
    FROM (
        SELECT follower, toDate(at, {{tz:String}}) AS day, argMax(on, (at, ord)) AS state
        FROM ({rows})
        GROUP BY follower, day
    )
)
WHERE state != prev AND day <= {{end:Date}}
GROUP BY day
ORDER BY day
"""

# Retention in one pass over the follow rows: per follower, the cohort (the week of the first row that turned the
# follow on) and the rows in order; then, for every week offset k up to the week of ``asof``, the state after the
# follower's last row in a week up to cohort + k (no row after ``asof`` is read, so the week of ``asof`` ends there).
# Rows: (cohort, k, followers of the cohort, of whom on at the end of week cohort + k).
RETENTION_SQL = """
SELECT cohort, k, toInt64(count()) AS size, toInt64(countIf(
           arrayLast(e -> toMonday(e.1, {{tz:String}}) <= addWeeks(cohort, k), rows).3 = 1)) AS kept
FROM (
    SELECT follower, toMonday(minIf(at, on = 1), {{tz:String}}) AS cohort, arraySort(groupArray((at, ord, on))) AS rows
    FROM ({rows})
    GROUP BY follower
    HAVING countIf(on = 1) > 0 AND cohort >= {{first:Date}}
)
ARRAY JOIN range(toUInt64(intDiv({{last:Date}} - cohort, 7) + 1)) AS k
GROUP BY cohort, k
"""


def _source(ch: ClickHouse, request: InsightRequest) -> tuple[str, dict[str, Any]]:
    """The follow rows source for this request (the history table where it has a cut) and its parameters."""
    corrections = histories.Corrections.read(ch, request.user_id)
    params = {"user": request.user_id, "asof": request.as_of, "tz": request.tz, **corrections.params()}
    return corrections.follow_rows(), params


def growth(ch: ClickHouse, request: InsightRequest) -> dict[str, Any]:
    """``{"userId", "days": [{"day", "gained", "lost", "followers"}, ...]}`` from ``start`` to ``end``."""
    assert request.start is not None and request.end is not None  # noqa: S101 - checked by InsightRequest
    rows, params = _source(ch, request)
    changes = ch.rows(GROWTH_SQL.format(rows=rows), {**params, "end": request.end})
    followers = 0
    by_day: dict[date, tuple[int, int]] = {}
    for day, gained, lost in changes:
        if day < request.start:
            followers += int(gained) - int(lost)
        else:
            by_day[day] = (int(gained), int(lost))
    days: list[dict[str, Any]] = []
    day = request.start
    while day <= request.end:
        gained, lost = by_day.get(day, (0, 0))
        followers += gained - lost
        days.append({"day": day.isoformat(), "gained": gained, "lost": lost, "followers": followers})
        day += timedelta(days=1)
    return {"userId": request.user_id, "days": days}


def week_of(at: datetime, request: InsightRequest) -> date:
    """The Monday of the week holding ``at``, in the request's zone."""
    local = at.astimezone(request.zone).date()
    return local - timedelta(days=local.weekday())


def retention(ch: ClickHouse, request: InsightRequest) -> dict[str, Any]:
    """``{"userId", "asOf", "cohorts": [{"week", "size", "retained": [...]}, ...]}``: the ``weeks`` weeks ending
    with the week of ``asOf``, oldest first."""
    last = week_of(request.as_of, request)
    first = last - timedelta(weeks=request.weeks - 1)
    sizes: dict[date, int] = {}
    kept: dict[date, dict[int, int]] = defaultdict(dict)
    rows, params = _source(ch, request)
    for cohort, k, size, n in ch.rows(RETENTION_SQL.format(rows=rows), {**params, "first": first, "last": last}):
        sizes[cohort] = int(size)
        kept[cohort][int(k)] = int(n)
    cohorts = []
    for i in range(request.weeks):
        week = first + timedelta(weeks=i)
        span = (last - week).days // 7 + 1
        cohorts.append(
            {
                "week": week.isoformat(),
                "size": sizes.get(week, 0),
                "retained": [kept[week].get(k, 0) for k in range(span)],
            }
        )
    return {"userId": request.user_id, "asOf": request.as_of.isoformat(), "cohorts": cohorts}
