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

**Set rows**, for a user's first miss (``app.read.reactions_miss.complete_reactions``): row (user, 0) holds every
image of the user's in one value, so that a complete set is one key-value lookup instead of a read of the user's range
of ``stateByActor FINAL`` (on a server, about 2 ms in the engine against 5 to 12 ms, growing with the table's parts).
``versions`` is the images' flags as one comma-separated string, then each image's merge-script argument
(``reactions_cache.ReactionSet``); a user with more images than ``REACTIONS_COMPLETE_MAX_IMAGES`` gets ``flags`` 1
and the count instead. A second view marks each user's latest reaction arrival in row (-user, 0) (sql/0014), and
every run rewrites the set rows of the users with a reaction in its slice, so the same rule holds: a set row serves
while the user's mark is not later than the position. The sentinel row says ``SETS`` when a run kept the set rows;
a table without it (complete sets turned on since, or kept by an earlier version) gets a full run, and readers read
``stateByActor`` meanwhile.

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
    SETS,
    recorded_reactions_sentinel,
)
from app.stores.clickhouse import ClickHouse
from app.stores.runtime import Runtime

FULL_CHUNK_ROWS = 1_000_000  # latest-state rows per statement of a full run
TABLE, COLUMNS = REACTIONS_TABLE, REACTIONS_COLUMNS

# Every (user, image) of ``where`` from its latest-state rows: the flags and, in bit order, each bit's version as the
# cache writes it (``reactions_cache.version_of``; '0' where no event set that bit). Built from constants only.
_KEYS = "metricType IN {reactions:Array(String)} AND entityType = 'Image'"
_VERSIONS = ", ".join(f"if(countIf(bit = {b}) = 0, '{NO_VERSION}', anyIf(version, bit = {b}))" for b in BITS)


def _per_image(where: str) -> str:
    """Each (user, image) of ``where`` from its latest-state rows: ``f`` the flags, ``v`` the versions in bit order."""
    return f"""
SELECT userId, entityId, toUInt8(groupBitOr(if(isOn, bit, 0))) AS f, [{_VERSIONS}] AS v
FROM (
    SELECT userId, entityId, isOn,
           transform(metricType, {[BIT_OF_NAME[b] for b in BITS]}, {BITS}, 0) AS bit,
           concat(leftPad(toString(toUnixTimestamp64Milli(at)), 15, '0'), ':', toString(eventId)) AS version
    FROM stateByActor FINAL
    WHERE {_KEYS} AND {where}
)
GROUP BY userId, entityId
"""  # noqa: S608


def _rows_sql(where: str) -> str:
    return f"""
INSERT INTO {TABLE} ({", ".join(COLUMNS)})
SELECT userId, entityId, f, v, {{now:DateTime64(3, 'UTC')}} FROM ({_per_image(where)})
"""  # noqa: S608


# An image's merge-script argument as the reactions cache writes a fill: ``image|bit|on|version`` for all four bits
# (``reactions_cache.ReactionSet``).
_STATE = ", ".join(f"'|{b}|', toString(bitAnd(f, {b}) > 0), '|', v[{i + 1}]" for i, b in enumerate(BITS))


def _sets_sql(where: str) -> str:
    """The set rows (user, 0) of the users of ``where``: every image of the user's, or a too-big mark with the count
    (see ``SETS``)."""
    return f"""
INSERT INTO {TABLE} ({", ".join(COLUMNS)})
SELECT userId, 0, toUInt8(length(items) > {{cap:UInt64}}),
       if(length(items) > {{cap:UInt64}}, [toString(length(items))],
          arrayConcat([arrayStringConcat(arrayMap(x -> toString(x.1), items), ',')], arrayMap(x -> x.2, items))),
       {{now:DateTime64(3, 'UTC')}}
FROM (
    SELECT userId, groupArray((f, concat(toString(entityId), {_STATE}))) AS items
    FROM ({_per_image(where)})
    GROUP BY userId
)
"""  # noqa: S608


# The keys with a reaction in the changelog slice.
_ARRIVED = f"""
SELECT userId, entityId FROM eventArrivals
WHERE insertedAt > {{after:DateTime64(3, 'UTC')}} AND insertedAt <= {{until:DateTime64(3, 'UTC')}} AND {_KEYS}
"""  # noqa: S608
ARRIVED_COUNT_SQL = f"SELECT count() FROM (SELECT DISTINCT userId, entityId FROM ({_ARRIVED}))"  # noqa: S608
_IN_SLICE = f"userId IN (SELECT userId FROM ({_ARRIVED})) AND (userId, entityId) IN ({_ARRIVED})"  # noqa: S608
INCREMENTAL_SQL = _rows_sql(_IN_SLICE)
INCREMENTAL_SETS_SQL = _sets_sql(f"userId IN (SELECT userId FROM ({_ARRIVED}))")  # noqa: S608
# A full run's next range of users: up to the user at which about FULL_CHUNK_ROWS latest-state rows are covered.
NEXT_BOUND_SQL = f"""
SELECT max(userId), count() FROM (
    SELECT userId FROM stateByActor WHERE {_KEYS} AND userId > {{after:Int64}} ORDER BY userId LIMIT {{rows:UInt64}}
)
"""  # noqa: S608
_RANGE = "userId > {after:Int64} AND userId <= {upto:Int64}"
FULL_SQL, FULL_SETS_SQL = _rows_sql(_RANGE), _sets_sql(_RANGE)


def _mark_exact(ch: ClickHouse, generation: str, inserted_after: datetime, now: datetime, sets: bool) -> None:
    """Row ``REACTIONS_SENTINEL``, written after a run's rows: the generation, the position up to which rows are
    exact, and ``SETS`` when the run kept the set rows."""
    position = str(int(inserted_after.timestamp() * 1000))
    ch.insert(TABLE, [[*REACTIONS_SENTINEL, 0, [generation, position, *([SETS] if sets else [])], now]], COLUMNS)


class ReactionsSnapshot(ChangelogJob):
    """The reactions snapshot on the changelog (see the module's text)."""

    name = REACTIONS_JOB

    def __init__(self, rt: Runtime, forced: bool) -> None:
        self.now = clock(rt)
        self.state = load_state(rt.redis, REACTIONS_JOB)
        self.forced = forced
        # The set rows hold at most this many images (more: a too-big mark); none when complete sets are off.
        self.cap = rt.settings.reactions_complete_max_images
        self.params = {"reactions": REACTION_NAMES, "now": self.now, "cap": self.cap}

    def stale(self, rt: Runtime, run: Slice) -> bool:
        recorded = recorded_reactions_sentinel(rt.clickhouse)
        return (
            self.state.get("ready") != "1"
            # not the table the state describes
            or [v[0] for v in recorded] != [self.state.get("generation", "")]
            # set rows wanted and not kept (complete sets turned on, or a table an earlier version kept)
            or (self.cap > 0 and not any(SETS in v[2:] for v in recorded))
        )

    def incremental(self, rt: Runtime, run: Slice) -> JobReport:
        ch = rt.clickhouse
        window = {**self.params, **run.params()}
        arrived = int(ch.rows(ARRIVED_COUNT_SQL, window)[0][0])
        if arrived:
            ch.command(INCREMENTAL_SQL, window)
            if self.cap > 0:
                ch.command(INCREMENTAL_SETS_SQL, window)
        _mark_exact(ch, self.state["generation"], run.next_after, self.now, self.cap > 0)
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
                if self.cap > 0:
                    ch.command(FULL_SETS_SQL, {**self.params, "after": after, "upto": int(upto)})
                after = int(upto)
                yield after, int(rows), False

        finished, written = full.advance(rt, steps(), started)
        if not finished:
            return JobReport("snapshot_reactions", "full (to be resumed)", changed=written)
        _mark_exact(ch, str(full.generation), full.next_after, self.now, self.cap > 0)
        full.finish(rt, self.now)
        return JobReport("snapshot_reactions", "full", changed=written)


def snapshot_reactions(rt: Runtime, full: bool | None = None) -> JobReport:
    """The reactions snapshot (see the module's text); ``full`` forces a full run."""
    return run_on_changelog(rt, ReactionsSnapshot(rt, bool(full)), full)
