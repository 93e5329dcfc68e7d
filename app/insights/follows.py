"""Growth and retention: a creator's followers over time, from the follow events of the log.

A follow is a state key ``(User, creator, Follow, follower)``: its state at an instant is its latest event by
``(createdAt, eventId)`` at or before that instant. The follow events of one creator are one range of the log's
primary key, so both queries read only them, however large the log is:

- growth takes each follower's state at the end of every day with an event (the latest of that day) and compares it
  with the same follower's previous such day: on after off is a gain, off after on a loss; a follow and an unfollow
  inside one day are neither, because only the end of the day counts. The number of followers at the end of a day
  is the sum of the gains and losses up to it, so ``followers(d) = followers(d-1) + gained(d) - lost(d)`` holds by
  construction and equals ``followerCount`` as of that instant.
- retention does the same by week, and places each follower in the cohort of the week of the first event that ever
  turned the follow on; a follower counts as retained k weeks later while the state at the end of that week is on.

Excluded users' follows and a creator's follow of themself count for nobody, as in the metrics.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
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

# Retention, in two parts: ('size', cohort, -1, n) per cohort, and ('kept', cohort, k, n): followers of the cohort
# whose follow is on at the end of week cohort + k. Each follower's weeks with events give runs of weeks in one
# state (from a week with events to the next one); a run that is on counts for every k it covers, up to the week of
# ``asof`` (the state at ``asof`` is the state at the end of its week: no event after ``asof`` is read).
RETENTION_SQL = """
WITH follows AS ({rows}),
firsts AS (
    SELECT follower, toMonday(minIf(at, on = 1), {{tz:String}}) AS cohort
    FROM follows
    GROUP BY follower
    HAVING countIf(on = 1) > 0 AND cohort >= {{first:Date}}
),
runs AS (
    SELECT follower, week, state,
           leadInFrame(week, 1, toDate('2149-06-01')) OVER (PARTITION BY follower ORDER BY week
                                                             ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS nextWeek
    FROM (
        SELECT follower, toMonday(at, {{tz:String}}) AS week, argMax(on, (at, ord)) AS state
        FROM follows
        WHERE follower IN (SELECT follower FROM firsts)
        GROUP BY follower, week
    )
)
SELECT 'size' AS part, cohort, toInt64(-1) AS k, toInt64(count()) AS n
FROM firsts
GROUP BY cohort
UNION ALL
SELECT 'kept', cohort, k, toInt64(count())
FROM (
    SELECT cohort,
           arrayJoin(range(toInt64(intDiv(week - cohort, 7)),
                           toInt64(least(intDiv(nextWeek - cohort, 7), intDiv({{last:Date}} - cohort, 7) + 1)))) AS k
    FROM runs INNER JOIN firsts USING (follower)
    WHERE state = 1 AND week >= cohort
)
GROUP BY cohort, k
"""


def _source(ch: ClickHouse, request: InsightRequest) -> tuple[str, dict[str, Any]]:
    """The follow rows source for this request (the history table where it has a cut) and its parameters."""
    cut = histories.usable_cut(histories.read_cuts(ch), histories.FOLLOWS_TABLE, datetime.now(UTC))
    params = {"user": request.user_id, "asof": request.as_of, "tz": request.tz}
    if cut is not None:
        params["cut"] = cut
    return histories.follow_rows(cut), params


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
    for part, cohort, k, n in ch.rows(RETENTION_SQL.format(rows=rows), {**params, "first": first, "last": last}):
        if part == "size":
            sizes[cohort] = int(n)
        else:
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
