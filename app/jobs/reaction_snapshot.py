"""The reactions snapshot: every user's reaction flags per image (``reactionSnapshot``, sql/0011), so that a
reactions miss looks up one key per image instead of reading the user's range of ``stateByActor``
(``app.read.reaction_snapshot.current_reactions``).

A row is ``stateByActor``'s latest state of the key's four reactions at the run's time, with the version of each
bit. It stays exact until a reaction event of that (user, image) arrives. Each run rewrites the keys with a reaction
in the changelog slice since the last run (``eventArrivals``, the same slice rules as the metrics snapshot), inside
the engine (one ``INSERT ... SELECT``). A view marks every key's latest arrival in the same table (sql/0011);
readers resolve every key marked after the run's slice from ``stateByActor``.

Why a mark that a later write may overwrite with an earlier time is still safe: the marks of two inserts of one key
can land out of order only while both inserts run; a run's slice never passes the start of an insert still running
(``slice_end``), and an insert's marks are written before it ends; so by the time a slice passes an arrival, that
arrival's key is in the slice and is rewritten from the latest state, which then holds it.

A full run (first run, arrivals expired, the table not the one the state describes) rewrites every key with a
reaction event, a range of users at a time; it resumes where it stopped if it is interrupted or
runs out of its time budget.

What readers need to know lives in the table itself, so that a miss is one multi-get and no Redis call: row
``SENTINEL`` holds the generation of the last finished full run and the changelog position (``inserted_after``,
ms) up to which every key's row is exact. Every run writes it after its rows. A table without it (never finished,
or lost and recreated) is not read. A full run started under an earlier one's row (the job's state lost, a forced
run) leaves that row in place until it finishes: the row's position stays true, since the run only rewrites rows
with the latest state, and keys that arrived after that position are read from ``stateByActor`` anyway.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime

from app.caches.reactions_cache import BIT_OF, NO_VERSION
from app.core.events import as_utc
from app.jobs.engagement import ARRIVALS_KEPT, INFLIGHT_MARGIN, slice_end
from app.jobs.report import JobReport, load_state, save_state
from app.jobs.report import now as clock
from app.stores import cluster_schema
from app.stores.clickhouse import ClickHouse
from app.stores.runtime import Runtime

JOB = "reaction_snapshot"
TABLE = "reactionSnapshot"
COLUMNS = ["userId", "imageId", "flags", "versions", "computedAt"]
BUDGET_SHARE = 0.8  # of JOB_TIME_LIMIT_S, after which a full run stops and resumes in the next run
FULL_CHUNK_ROWS = 1_000_000  # latest-state rows per statement of a full run
SENTINEL = (0, 0)  # ids are positive: row (0, 0) is the generation of the last full run and the exact position
REACTIONS = sorted(m.value for m in BIT_OF)
BITS = sorted(BIT_OF.values())
BIT_OF_NAME = {bit: metric.value for metric, bit in BIT_OF.items()}

# Every (user, image) of ``where`` from its latest-state rows: the flags and, in bit order, each bit's version as the
# cache writes it (``reactions_cache.version_of``; '0' where no event set that bit). Built from constants only.
_KEYS = "metricType IN {reactions:Array(String)} AND entityType = 'Image'"
_VERSIONS = ", ".join(f"if(countIf(bit = {b}) = 0, '{NO_VERSION}', anyIf(version, bit = {b}))" for b in BITS)


def _rows_sql(where: str) -> str:
    return f"""
INSERT INTO {TABLE} ({", ".join(COLUMNS)})
SELECT userId, entityId, toUInt8(groupBitOr(if(isOn, bit, 0))), [{_VERSIONS}], {{now:DateTime64(3, 'UTC')}}
FROM (
    SELECT userId, entityId, isOn,
           transform(metricType, {[BIT_OF_NAME[b] for b in BITS]}, {BITS}, 0) AS bit,
           concat(leftPad(toString(toUnixTimestamp64Milli(at)), 15, '0'), ':', toString(eventId)) AS version
    FROM stateByActor FINAL
    WHERE {_KEYS} AND {where}
)
GROUP BY userId, entityId
"""  # noqa: S608


# The keys with a reaction in the changelog slice.
_ARRIVED = f"""
SELECT userId, entityId FROM eventArrivals
WHERE insertedAt > {{after:DateTime64(3, 'UTC')}} AND insertedAt <= {{until:DateTime64(3, 'UTC')}} AND {_KEYS}
"""  # noqa: S608
ARRIVED_COUNT_SQL = f"SELECT count() FROM (SELECT DISTINCT userId, entityId FROM ({_ARRIVED}))"  # noqa: S608
_IN_SLICE = f"userId IN (SELECT userId FROM ({_ARRIVED})) AND (userId, entityId) IN ({_ARRIVED})"  # noqa: S608
INCREMENTAL_SQL = _rows_sql(_IN_SLICE)
# A full run's next range of users: up to the user at which about FULL_CHUNK_ROWS latest-state rows are covered.
NEXT_BOUND_SQL = f"""
SELECT max(userId), count() FROM (
    SELECT userId FROM stateByActor WHERE {_KEYS} AND userId > {{after:Int64}} ORDER BY userId LIMIT {{rows:UInt64}}
)
"""  # noqa: S608
FULL_SQL = _rows_sql("userId > {after:Int64} AND userId <= {upto:Int64}")
ENGINE_NOW_SQL = "SELECT now64(3, 'UTC')"  # the changelog's clock (``insertedAt``), which slices are cut on
GENERATION_SQL = f"SELECT versions FROM {TABLE} WHERE userId = 0 AND imageId = 0"  # noqa: S608


def table_sql(sql: str, ch: ClickHouse) -> str:
    """``sql`` reading the table as this deployment keeps it (``cluster_schema.as_deployed``)."""
    return cluster_schema.as_deployed(sql, TABLE, ch.cluster is not None)


def recorded_generation(ch: ClickHouse) -> list[str]:
    return [str(v[0]) if v else "" for (v,) in ch.rows(table_sql(GENERATION_SQL, ch))]


def _mark_exact(ch: ClickHouse, generation: str, inserted_after: datetime, now: datetime) -> None:
    """Row ``SENTINEL``, written after a run's rows: the generation, and the position up to which rows are exact."""
    position = str(int(inserted_after.timestamp() * 1000))
    ch.insert(TABLE, [[*SENTINEL, 0, [generation, position], now]], COLUMNS)


def snapshot_reactions(rt: Runtime, full: bool | None = None) -> JobReport:
    """The reactions snapshot (see the module's text); ``full`` forces a full run."""
    started = time.perf_counter()
    r, ch = rt.redis, rt.clickhouse
    now = clock(rt)
    state = load_state(r, JOB)
    until = slice_end(ch, as_utc(ch.rows(ENGINE_NOW_SQL)[0][0]))
    inserted_after = datetime.fromisoformat(state.get("inserted_after", "1970-01-01T00:00:00+00:00"))
    must = (
        state.get("ready") != "1"
        or recorded_generation(ch) != [state.get("generation", "")]  # not the table the state describes
        or inserted_after < until - ARRIVALS_KEPT
    )
    params = {"reactions": REACTIONS, "now": now}
    if not (must or full):
        window = {**params, "after": inserted_after, "until": until}
        arrived = int(ch.rows(ARRIVED_COUNT_SQL, window)[0][0])
        if arrived:
            ch.command(INCREMENTAL_SQL, window)
        _mark_exact(ch, state["generation"], until - INFLIGHT_MARGIN, now)
        save_state(r, JOB, {"inserted_after": (until - INFLIGHT_MARGIN).isoformat(), "now": now.isoformat()})
        return JobReport("snapshot_reactions", "incremental", changed=arrived, seconds=time.perf_counter() - started)

    resuming = state.get("ready") == "0" and "full_next" in state and not full
    if resuming:  # an interrupted full run: its slice start, and the users after the last range written
        full_until, after_user, generation = (
            datetime.fromisoformat(state["full_until"]),
            int(state["full_next"]),
            state["generation"],
        )
    else:
        full_until, after_user, generation = until, 0, str(secrets.randbits(62) + 1)
        # Every key with a reaction event gets its state row rewritten (events are never deleted from the log), and
        # the arrival marks stay: readers need them for the inserts landing while this run goes on.
        save_state(r, JOB, {"ready": 0, "full_next": 0, "full_until": full_until.isoformat(), "generation": generation})
    deadline = started + rt.settings.job_time_limit_s * BUDGET_SHARE
    written = 0
    while True:
        upto, rows = ch.rows(NEXT_BOUND_SQL, {**params, "after": after_user, "rows": FULL_CHUNK_ROWS})[0]
        if not int(rows):
            break
        ch.command(FULL_SQL, {**params, "after": after_user, "upto": int(upto)})
        written += int(rows)
        after_user = int(upto)
        save_state(r, JOB, {"full_next": after_user})
        if time.perf_counter() > deadline:
            return JobReport(
                "snapshot_reactions", "full (to be resumed)", changed=written, seconds=time.perf_counter() - started
            )
    # Keys whose events arrived since the full run began were written after their arrival, or will be by the next
    # run: the next slice starts where the full run's did.
    _mark_exact(ch, generation, full_until - INFLIGHT_MARGIN, now)
    save_state(
        r,
        JOB,
        {"ready": 1, "inserted_after": (full_until - INFLIGHT_MARGIN).isoformat(), "now": now.isoformat()},
    )
    return JobReport("snapshot_reactions", "full", changed=written, seconds=time.perf_counter() - started)
