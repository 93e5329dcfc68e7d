"""The reactions snapshot: every user's reaction flags per image (``reactionSnapshot``, sql/0011), so that a
reactions miss looks up one key per image instead of reading the user's range of ``stateByActor``
(``app.read.reactions_miss.current_reactions``).

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
``REACTIONS_SENTINEL`` holds the generation of the last finished full run and the changelog position
(``inserted_after``, ms) up to which every key's row is exact. Every run writes it after its rows. A table without
it (never finished, or lost and recreated) is not read. A full run started under an earlier one's row (the job's
state lost, a forced run) leaves that row in place until it finishes: the row's position stays true, since the run
only rewrites rows with the latest state, and keys that arrived after that position are read from
``stateByActor`` anyway.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

from app.caches.reactions_cache import NO_VERSION
from app.derived.changelog import ChangelogJob, FullRun, Slice, run_on_changelog, save_position
from app.derived.job_state import JobReport, load_state
from app.derived.job_state import now as clock
from app.derived.tables import (
    BIT_OF_NAME,
    BITS,
    REACTION_NAMES,
    REACTIONS_COLUMNS,
    REACTIONS_JOB,
    REACTIONS_SENTINEL,
    REACTIONS_TABLE,
    recorded_reactions_generation,
)
from app.stores.clickhouse import ClickHouse
from app.stores.runtime import Runtime

FULL_CHUNK_ROWS = 1_000_000  # latest-state rows per statement of a full run
TABLE, COLUMNS = REACTIONS_TABLE, REACTIONS_COLUMNS

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


def _mark_exact(ch: ClickHouse, generation: str, inserted_after: datetime, now: datetime) -> None:
    """Row ``REACTIONS_SENTINEL``, written after a run's rows: the generation, and the position up to which rows
    are exact."""
    position = str(int(inserted_after.timestamp() * 1000))
    ch.insert(TABLE, [[*REACTIONS_SENTINEL, 0, [generation, position], now]], COLUMNS)


class ReactionsSnapshot(ChangelogJob):
    """The reactions snapshot on the changelog (see the module's text)."""

    name = REACTIONS_JOB

    def __init__(self, rt: Runtime, forced: bool) -> None:
        self.now = clock(rt)
        self.state = load_state(rt.redis, REACTIONS_JOB)
        self.forced = forced
        self.params = {"reactions": REACTION_NAMES, "now": self.now}

    def stale(self, rt: Runtime, run: Slice) -> bool:
        return (
            self.state.get("ready") != "1"
            # not the table the state describes
            or recorded_reactions_generation(rt.clickhouse) != [self.state.get("generation", "")]
        )

    def incremental(self, rt: Runtime, run: Slice) -> JobReport:
        ch = rt.clickhouse
        window = {**self.params, **run.params()}
        arrived = int(ch.rows(ARRIVED_COUNT_SQL, window)[0][0])
        if arrived:
            ch.command(INCREMENTAL_SQL, window)
        _mark_exact(ch, self.state["generation"], run.next_after, self.now)
        save_position(rt, REACTIONS_JOB, run.next_after, self.now)
        return JobReport("snapshot_reactions", "incremental", changed=arrived)

    def full(self, rt: Runtime, run: Slice) -> JobReport:
        # Every key with a reaction event gets its state row rewritten (events are never deleted from the log), and
        # the arrival marks stay: readers need them for the inserts landing while this run goes on.
        started = time.perf_counter()
        ch = rt.clickhouse
        full = FullRun.begin(rt, self, run, resume=not self.forced)

        def steps() -> Iterator[tuple[int, int, bool]]:
            after = full.cursor
            while True:
                upto, rows = ch.rows(NEXT_BOUND_SQL, {**self.params, "after": after, "rows": FULL_CHUNK_ROWS})[0]
                if not int(rows):
                    return
                ch.command(FULL_SQL, {**self.params, "after": after, "upto": int(upto)})
                after = int(upto)
                yield after, int(rows), False

        finished, written = full.advance(rt, steps(), started)
        if not finished:
            return JobReport("snapshot_reactions", "full (to be resumed)", changed=written)
        _mark_exact(ch, str(full.generation), full.next_after, self.now)
        full.finish(rt, self.now)
        return JobReport("snapshot_reactions", "full", changed=written)


def snapshot_reactions(rt: Runtime, full: bool | None = None) -> JobReport:
    """The reactions snapshot (see the module's text); ``full`` forces a full run."""
    return run_on_changelog(rt, ReactionsSnapshot(rt, bool(full)), full)
