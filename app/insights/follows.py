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
from datetime import date, datetime, timedelta
from typing import Any

from app.core.metrics import EXCLUDED_USERS_SQL
from app.insights.requests import InsightRequest
from app.stores.clickhouse import ClickHouse

# The creator's follow events up to ``asof``, by followers who count. Every value below is a bound parameter.
_FOLLOWS = f"""
    FROM entityMetricEvents
    WHERE entityType = 'User' AND entityId = {{user:Int64}} AND metricType = 'Follow'
      AND createdAt <= {{asof:DateTime64(3, 'UTC')}}
      AND userId != {{user:Int64}} AND userId NOT IN {EXCLUDED_USERS_SQL}
"""  # noqa: S608

# (day, gained, lost) for every day with a change, up to ``end``: each follower's state at the end of each day with
# an event, against their previous such day.
GROWTH_SQL = f"""
SELECT day, toInt64(countIf(on = 1)) AS gained, toInt64(countIf(on = 0)) AS lost
FROM (
    SELECT day, on,
           lagInFrame(on, 1, toUInt8(0)) OVER (PARTITION BY follower ORDER BY day
                                               ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev
    FROM (
        SELECT userId AS follower, toDate(createdAt, {{tz:String}}) AS day,
               toUInt8(argMax(metricValue, (createdAt, toString(eventId))) > 0) AS on
        {_FOLLOWS}
        GROUP BY follower, day
    )
)
WHERE on != prev AND day <= {{end:Date}}
GROUP BY day
ORDER BY day
"""  # noqa: S608

# Retention, in two parts: ('size', cohort, -1, n) per cohort, and ('kept', cohort, k, n): followers of the cohort
# whose follow is on at the end of week cohort + k. Each follower's weeks with events give runs of weeks in one
# state (from a week with events to the next one); a run that is on counts for every k it covers, up to the week of
# ``asof`` (the state at ``asof`` is the state at the end of its week: no event after ``asof`` is read).
RETENTION_SQL = f"""
WITH firsts AS (
    SELECT userId AS follower, toMonday(minIf(createdAt, metricValue > 0), {{tz:String}}) AS cohort
    {_FOLLOWS}
    GROUP BY follower
    HAVING countIf(metricValue > 0) > 0 AND cohort >= {{first:Date}}
),
runs AS (
    SELECT follower, week, on,
           leadInFrame(week, 1, toDate('2149-06-01')) OVER (PARTITION BY follower ORDER BY week
                                                             ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS nextWeek
    FROM (
        SELECT userId AS follower, toMonday(createdAt, {{tz:String}}) AS week,
               toUInt8(argMax(metricValue, (createdAt, toString(eventId))) > 0) AS on
        {_FOLLOWS}
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
    WHERE on = 1 AND week >= cohort
)
GROUP BY cohort, k
"""  # noqa: S608


def _params(request: InsightRequest) -> dict[str, Any]:
    return {"user": request.user_id, "asof": request.as_of, "tz": request.tz}


def growth(ch: ClickHouse, request: InsightRequest) -> dict[str, Any]:
    """``{"userId", "days": [{"day", "gained", "lost", "followers"}, ...]}`` from ``start`` to ``end``."""
    assert request.start is not None and request.end is not None  # noqa: S101 - checked by InsightRequest
    changes = ch.rows(GROWTH_SQL, {**_params(request), "end": request.end})
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
    for part, cohort, k, n in ch.rows(RETENTION_SQL, {**_params(request), "first": first, "last": last}):
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
