"""``snapshot_user_metrics``: every user's metrics, computed by the read path itself and kept in
``userMetricsSnapshot`` (sql/0009), so that a cache miss reads one row per user instead of every key the user
owns (``app.read.metrics_miss``).

A row is exact when written (it is ``compute_user_metrics`` at the run's ``now``) and stays exact until one of the
user's rows arrives: counts only change with a new row, and the engagement score only falls as counting events
leave the window, which the row lists for the next ``SNAPSHOT_HORIZON_S`` (``dropAt``/``dropWeight``; the row is
valid until then). Each run recomputes the users with rows in the changelog slice since the last run
(``eventArrivals``, the same slice rules as the engagement job) and the users whose horizon ends soon (every user
with something counting, once per horizon); readers treat every user with a later arrival, or past its horizon,
as changed and compute it in full.

A full run (first run, the excluded set or the weights or the window changed, arrivals expired, a full run not
finished) recomputes every user with any event, in user order, and resumes where it stopped if it is interrupted
or runs out of its time budget. Until it has finished, readers do not use the snapshot (``ready`` is 0).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from app.core.events import as_utc
from app.core.metrics import ADDITIVE, EXCLUDED_USERS_SQL, OWNER_STATE_TYPES_SQL, SCORE_SCALE, WEIGHT_SQL
from app.derived import tables
from app.derived.changelog import ChangelogJob, FullRun, Slice, run_on_changelog, save_position
from app.derived.job_state import JobReport, load_state
from app.derived.job_state import now as clock
from app.derived.metrics_from_log import USERS_PER_QUERY, compute_user_metrics
from app.derived.tables import FOREVER, METRICS_COLUMNS, METRICS_JOB, METRICS_TABLE, SENTINEL_USER
from app.stores.runtime import Runtime

# Past this many changed users (a backfill, a bulk import) a run goes full: a full run has a time budget and resumes.
INCREMENTAL_MAX_USERS = 20_000

# Every user with anything to count, in user order (a full run's work list).
ALL_USERS_SQL = """
SELECT u FROM (
    SELECT DISTINCT userId AS u FROM stateByActor WHERE metricType IN ('Follow', 'Upload')
    UNION DISTINCT
    SELECT DISTINCT ownerId FROM stateByOwner
    UNION DISTINCT
    SELECT DISTINCT ownerId FROM additiveDaily
)
WHERE u > {after:Int64} AND u != 0
ORDER BY u
"""
# Actors and owners of every row in the changelog slice.
ARRIVED_USERS_SQL = """
SELECT DISTINCT u FROM (
    SELECT arrayJoin([userId, ownerId]) AS u FROM eventArrivals
    WHERE insertedAt > {after:DateTime64(3, 'UTC')} AND insertedAt <= {until:DateTime64(3, 'UTC')}
)
WHERE u != 0
"""
EXPIRING_SQL = """
SELECT userId FROM userMetricsSnapshot WHERE validUntil <= {horizon:DateTime64(3, 'UTC')} AND userId != 0
"""
# What each owner's engagement loses as time passes without a new row: every counting state key and additive
# event in the window (the read path's filters: by another, non-excluded user) leaves it at its time + the window.
# Per owner: how many count, and those leaving before the horizon, with their weight.
DROPS_SQL = f"""
SELECT owner, count(), groupArrayIf(at, at < {{horizon_start:DateTime64(3, 'UTC')}}),
       groupArrayIf(w, at < {{horizon_start:DateTime64(3, 'UTC')}})
FROM (
    SELECT ownerId AS owner, at, toInt64({WEIGHT_SQL}) AS w
    FROM stateByOwner FINAL
    WHERE ownerId IN {{users:Array(Int64)}} AND metricType IN {OWNER_STATE_TYPES_SQL} AND isOn
      AND at >= {{since:DateTime64(3, 'UTC')}} AND userId != ownerId AND userId NOT IN {EXCLUDED_USERS_SQL}
    UNION ALL
    SELECT owner, at, toInt64(val * w) FROM (
        SELECT eventId, any(ownerId) AS owner, any(userId) AS actor, any(createdAt) AS at,
               any(metricValue) AS val, any({WEIGHT_SQL}) AS w
        FROM entityMetricEvents
        WHERE ownerId IN {{users:Array(Int64)}} AND metricType IN {{additive:Array(String)}}
          AND createdAt >= {{since:DateTime64(3, 'UTC')}}
        GROUP BY eventId
    )
    WHERE actor != owner AND actor NOT IN {EXCLUDED_USERS_SQL}
)
GROUP BY owner
"""  # noqa: S608


class MetricsSnapshot(ChangelogJob):
    """The metrics snapshot on the changelog (see the module's text)."""

    name = METRICS_JOB

    def __init__(self, rt: Runtime) -> None:
        self.now = clock(rt)
        self.state = load_state(rt.redis, METRICS_JOB)

    def stale(self, rt: Runtime, run: Slice) -> bool:
        recorded = [
            int(g) for (g,) in rt.clickhouse.rows(tables.metrics_sql(tables.METRICS_GENERATION_SQL, rt.clickhouse))
        ]
        return (
            self.state.get("ready") != "1"
            or recorded != [int(self.state.get("generation", -1))]  # the table is not the one the state describes
            or self.state.get("excluded_set") != run.excluded_set
            or self.state.get("basis") != tables.metrics_basis(rt)
        )

    def incremental(self, rt: Runtime, run: Slice) -> JobReport | None:
        ch = rt.clickhouse
        arrived = {int(u) for (u,) in ch.rows(ARRIVED_USERS_SQL, run.params())}
        if len(arrived) > INCREMENTAL_MAX_USERS:
            return None
        soon = self.now + timedelta(seconds=2 * rt.settings.snapshot_interval_s)
        expiring = {int(u) for (u,) in ch.rows(tables.metrics_sql(EXPIRING_SQL, ch), {"horizon": soon})}
        users = sorted(arrived | expiring)
        for i in range(0, len(users), USERS_PER_QUERY):
            _write(rt, users[i : i + USERS_PER_QUERY], self.now)
        save_position(rt, METRICS_JOB, run.next_after, self.now)
        return JobReport("snapshot_user_metrics", "incremental", users=len(users), changed=len(arrived))

    def full(self, rt: Runtime, run: Slice) -> JobReport:
        started = time.perf_counter()
        inputs = {"excluded_set": run.excluded_set, "basis": tables.metrics_basis(rt)}
        full = FullRun.begin(rt, self, run, resume=True, inputs=inputs)
        users = [int(u) for (u,) in rt.clickhouse.rows(ALL_USERS_SQL, {"after": full.cursor})]

        def steps() -> Iterator[tuple[int, int, bool]]:
            for i in range(0, len(users), USERS_PER_QUERY):
                batch = users[i : i + USERS_PER_QUERY]
                _write(rt, batch, self.now)
                yield batch[-1], len(batch), i + USERS_PER_QUERY >= len(users)

        finished, written = full.advance(rt, steps(), started)
        if not finished:
            return JobReport("snapshot_user_metrics", "full (to be resumed)", users=written)
        # The table's own record of the finished run: readers serve rows only from the generation the state names (a
        # table lost or recreated under a state saying ``ready`` would otherwise read as users with nothing).
        rt.clickhouse.insert(METRICS_TABLE, [_sentinel(full.generation, self.now)], METRICS_COLUMNS)
        full.finish(rt, self.now)
        return JobReport("snapshot_user_metrics", "full", users=written)


def snapshot_metrics(rt: Runtime, full: bool | None = None) -> JobReport:
    """The metrics snapshot alone (see the module's text); ``full`` forces a full run."""
    return run_on_changelog(rt, MetricsSnapshot(rt), full)


def _sentinel(generation: int, now: datetime) -> list[Any]:
    return [SENTINEL_USER, 0, 0, 0, 0, 0, 0, 0, 0, generation, [], [], FOREVER, now]


def _write(rt: Runtime, users: Sequence[int], now: datetime) -> None:
    ch = rt.clickhouse
    computed = compute_user_metrics(ch, users, weights=rt.weights, window=rt.window, now=now)
    horizon = timedelta(seconds=rt.settings.snapshot_horizon_s)
    drops = scheduled_drops(rt, users, now, horizon)
    rows: list[list[Any]] = []
    for uid in users:
        m = computed[uid]
        rows.append(
            [
                uid,
                m.follower_count,
                m.following_count,
                m.model_count,
                m.post_count,
                m.image_count,
                m.reaction_count,
                m.download_count,
                m.generation_count,
                int(m.engagement_score * SCORE_SCALE),
                *drops.get(uid, ([], [], FOREVER)),
                now,
            ]
        )
    ch.insert(METRICS_TABLE, rows, METRICS_COLUMNS)


def scheduled_drops(
    rt: Runtime, users: Sequence[int], now: datetime, horizon: timedelta
) -> dict[int, tuple[list[datetime], list[int], datetime]]:
    """Per owner with something counting in the window: when each of it leaves the window before ``now + horizon``
    and what it takes off, and until when that list is complete (``now + horizon``)."""
    since = now - rt.window
    params = {
        "users": list(users),
        "since": since,
        "horizon_start": since + horizon,
        "additive": ADDITIVE,
        **rt.weights.params(),
    }
    out: dict[int, tuple[list[datetime], list[int], datetime]] = {}
    for owner, counting, ats, weights in rt.clickhouse.rows(DROPS_SQL, params):
        if int(counting):
            out[int(owner)] = ([as_utc(a) + rt.window for a in ats], [int(w) for w in weights], now + horizon)
    return out
