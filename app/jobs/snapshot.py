"""``snapshot_user_metrics``: every user's metrics, computed by the read path itself and kept in
``userMetricsSnapshot`` (sql/0009), so that a cache miss reads one row per user instead of every key the user
owns (``app.read.snapshot``).

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

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from app.core.events import as_utc
from app.core.metrics import ADDITIVE, EXCLUDED_USERS_SQL, OWNER_STATE_TYPES_SQL, SCORE_SCALE, WEIGHT_SQL
from app.jobs import engagement_sql
from app.jobs.engagement import ARRIVALS_KEPT, INFLIGHT_MARGIN, slice_end
from app.jobs.reaction_snapshot import snapshot_reactions
from app.jobs.report import JobReport, load_state, save_state
from app.jobs.report import now as clock
from app.jobs.timeline import update_timeline
from app.read.metrics_query import USERS_PER_QUERY, compute_user_metrics
from app.stores import cluster_schema
from app.stores.clickhouse import ClickHouse
from app.stores.runtime import Runtime

JOB = "snapshot"
FOREVER = datetime.fromisoformat("2200-01-01T00:00:00+00:00")  # no counting event in the window: never expires
BUDGET_SHARE = 0.8  # of JOB_TIME_LIMIT_S, after which a full run stops and resumes in the next run
# Past this many changed users (a backfill, a bulk import) a run goes full: a full run has a time budget and resumes.
INCREMENTAL_MAX_USERS = 20_000

COLUMNS = [
    "userId",
    "followerCount",
    "followingCount",
    "modelCount",
    "postCount",
    "imageCount",
    "reactionCount",
    "downloadCount",
    "generationCount",
    "engagement",
    "dropAt",
    "dropWeight",
    "validUntil",
    "computedAt",
]

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
GENERATION_SQL = "SELECT engagement FROM userMetricsSnapshot WHERE userId = 0"


def snapshot_sql(sql: str, ch: ClickHouse) -> str:
    """``sql`` reading the snapshot table as this deployment keeps it (``cluster_schema.as_deployed``)."""
    return cluster_schema.as_deployed(sql, "userMetricsSnapshot", ch.cluster is not None)


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


def basis(rt: Runtime) -> str:
    """What the rows depend on besides the events and the excluded set: the weights and the window."""
    return json.dumps({"weights": rt.weights.params(), "window_s": rt.window.total_seconds()}, sort_keys=True)


def snapshot_user_metrics(rt: Runtime, full: bool | None = None) -> JobReport:
    """The metrics snapshot, then the hourly timeline of the state counts (``app.jobs.timeline``) and the reactions
    snapshot (``app.jobs.reaction_snapshot``), in one job: all three follow the same changelog, and one lock keeps
    them from running twice at once."""
    snap = snapshot_metrics(rt, full)
    line = update_timeline(rt, full)
    reactions = snapshot_reactions(rt, full)
    return replace(
        snap,
        mode=f"{snap.mode}; timeline {line.mode}; reactions {reactions.mode}",
        seconds=snap.seconds + line.seconds + reactions.seconds,
    )


def snapshot_metrics(rt: Runtime, full: bool | None = None) -> JobReport:
    """The snapshot alone (see the module's text); ``full`` forces a full run."""
    started = time.perf_counter()
    r, ch = rt.redis, rt.clickhouse
    now = clock(rt)
    state = load_state(r, JOB)
    excluded_set, engine_now = ch.rows(engagement_sql.EXCLUDED_SET_SQL)[0]
    until = slice_end(ch, as_utc(engine_now))
    inserted_after = datetime.fromisoformat(state.get("inserted_after", "1970-01-01T00:00:00+00:00"))
    resuming = (
        state.get("ready") == "0" and state.get("excluded_set") == excluded_set and state.get("basis") == basis(rt)
    )
    recorded = [int(g) for (g,) in ch.rows(snapshot_sql(GENERATION_SQL, ch))]
    must = (
        state.get("ready") != "1"
        or recorded != [int(state.get("generation", -1))]  # the table is not the one the state describes
        or state.get("excluded_set") != excluded_set
        or state.get("basis") != basis(rt)
        or inserted_after < until - ARRIVALS_KEPT
    )
    full = must or bool(full)
    arrived: set[int] = set()
    if not full:
        arrived = {int(u) for (u,) in ch.rows(ARRIVED_USERS_SQL, {"after": inserted_after, "until": until})}
        full = len(arrived) > INCREMENTAL_MAX_USERS
    if full:
        if resuming:  # an interrupted full run: its slice start, and the users after the last one written
            full_until, after_user = datetime.fromisoformat(state["full_until"]), int(state["full_next"])
        else:
            full_until, after_user = until, 0
        generation = int(state["generation"]) if resuming else secrets.randbits(62) + 1
        common = {
            "excluded_set": excluded_set,
            "basis": basis(rt),
            "full_until": full_until.isoformat(),
            "generation": generation,
        }
        save_state(r, JOB, {"ready": 0, "full_next": after_user, **common})
        users = [int(u) for (u,) in ch.rows(ALL_USERS_SQL, {"after": after_user})]
        deadline = started + rt.settings.job_time_limit_s * BUDGET_SHARE
        done = 0
        for i in range(0, len(users), USERS_PER_QUERY):
            batch = users[i : i + USERS_PER_QUERY]
            _write(rt, batch, now)
            done += len(batch)
            save_state(r, JOB, {"full_next": batch[-1]})
            if time.perf_counter() > deadline and i + USERS_PER_QUERY < len(users):
                return JobReport(
                    "snapshot_user_metrics", "full (to be resumed)", users=done, seconds=time.perf_counter() - started
                )
        # The table's own record of the finished run: readers serve rows only from the generation the state names (a
        # table lost or recreated under a state saying ``ready`` would otherwise read as users with nothing).
        ch.insert("userMetricsSnapshot", [_sentinel(generation, now)], COLUMNS)
        # Users whose rows arrived since the full run began were computed after their arrival, or will be by the
        # next run: the next slice starts where the full run's did.
        save_state(
            r,
            JOB,
            {
                "ready": 1,
                "inserted_after": (full_until - INFLIGHT_MARGIN).isoformat(),
                "now": now.isoformat(),
                **common,
            },
        )
        return JobReport("snapshot_user_metrics", "full", users=done, seconds=time.perf_counter() - started)
    soon = now + timedelta(seconds=2 * rt.settings.snapshot_interval_s)
    expiring = {int(u) for (u,) in ch.rows(snapshot_sql(EXPIRING_SQL, ch), {"horizon": soon})}
    users = sorted(arrived | expiring)
    for i in range(0, len(users), USERS_PER_QUERY):
        _write(rt, users[i : i + USERS_PER_QUERY], now)
    save_state(r, JOB, {"inserted_after": (until - INFLIGHT_MARGIN).isoformat(), "now": now.isoformat()})
    return JobReport(
        "snapshot_user_metrics",
        "incremental",
        users=len(users),
        changed=len(arrived),
        seconds=time.perf_counter() - started,
    )


SENTINEL_USER = 0  # user ids are positive; row 0 carries the generation of the last finished full run


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
    ch.insert("userMetricsSnapshot", rows, COLUMNS)


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
