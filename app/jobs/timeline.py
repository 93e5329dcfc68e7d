"""Every user's state counts hour by hour (``metricTimeline``, sql/0010), for ``metric_history`` (``app.read.history``).

A state key adds to a user's count at the hours where its state at the end of the hour differs from its state at
the end of its previous hour with an event. The table keeps those changes per key (``key`` rows) and their sums
per user, metric and hour (``cell`` rows) and day (``day`` rows). A history request then reads the user's day and
hour sums plus, for the few keys that changed since the table's ``cut`` or have events in the hour of the
request's end, the difference between their changes recomputed from the log and their stored ones.

Each run takes the keys with rows in the changelog slice since the last cut (``eventArrivals``, as the other jobs
do, overlapping the last slice by ``INFLIGHT_MARGIN``: reprocessing a key is harmless), recomputes their changes
from all of their events, compares them with the stored ones, and writes the key rows that differ, the cells they
move and the new cut in a single insert. A crash before that insert leaves the table as the last run left it.

A rebuild (first run, excluded set changed, the changelog slice expired) truncates the table and derives it from the
whole log, one family of keys at a time; it writes the cut last, and readers use the raw log until it exists.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from app.core import failpoints
from app.core.events import REACTION_TYPES, STATE_TYPES, as_utc
from app.core.metrics import EXCLUDED_USERS_SQL
from app.derived import changelog
from app.derived.changelog import ChangelogJob, Slice, run_on_changelog
from app.derived.job_state import JobReport
from app.derived.tables import TIMELINE_COLUMNS, TIMELINE_TABLE, cut_row, read_cut
from app.stores.clickhouse import ClickHouse
from app.stores.runtime import Runtime

TABLE, COLUMNS = TIMELINE_TABLE, TIMELINE_COLUMNS
# Past this many rows a run rebuilds instead: an insert is applied whole only while the engine keeps it one block
# (up to ``min_insert_block_size_rows``, about a million rows).
INCREMENTAL_MAX_ROWS = 500_000

_REACTIONS = "(" + ", ".join(f"'{m.value}'" for m in REACTION_TYPES.values()) + ")"
STATE_TYPES_SQL = "(" + ", ".join(f"'{m.value}'" for m in sorted(STATE_TYPES)) + ")"

# The (user, metric) pairs whose count a state event is part of: the filters of ``app.read.history`` side by side.
SUBJECTS_SQL = f"""multiIf(
    metricType = 'Follow',
        arrayConcat(if(entityType = 'User' AND userId != entityId AND userId NOT IN {EXCLUDED_USERS_SQL},
                       [(entityId, 'followerCount')], []),
                    [(userId, 'followingCount')]),
    metricType = 'Upload' AND entityType IN ('Model', 'Post', 'Image'),
        [(userId, concat(lower(entityType), 'Count'))],
    metricType IN {_REACTIONS} AND ownerId != 0 AND userId != ownerId AND userId NOT IN {EXCLUDED_USERS_SQL},
        [(ownerId, 'reactionCount')],
    CAST([], 'Array(Tuple(Int64, String))'))"""

_KEY = "subject, metric, keyType, entityType, entityId, actor"

# Every key's changes, hour by hour, for the event rows ``{where}`` selects (zero changes included: they tell the
# caller which (user, metric) pairs a key belongs to even where its changes cancel out).
TRANSITIONS_SQL = f"""
SELECT {_KEY}, hour,
       s - lagInFrame(s, 1, 0) OVER (PARTITION BY {_KEY} ORDER BY hour
                                     ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS delta
FROM (
    SELECT sm.1 AS subject, sm.2 AS metric, metricType AS keyType, entityType, entityId, userId AS actor,
           toDateTime(toStartOfHour(createdAt), 'UTC') AS hour,
           toInt64(argMax(metricValue, (createdAt, toString(eventId))) > 0) AS s
    FROM entityMetricEvents
    ARRAY JOIN {SUBJECTS_SQL} AS sm
    WHERE metricType IN {STATE_TYPES_SQL} AND {{where}}
    GROUP BY {_KEY}, hour
)
"""  # noqa: S608

# The keys of the changelog slice: their changes now, their stored changes, and the stored cells those touch.
_CHANGED = f"""
SELECT DISTINCT entityType, entityId, metricType, userId FROM eventArrivals
WHERE insertedAt > {{after:DateTime64(3, 'UTC')}} AND insertedAt <= {{until:DateTime64(3, 'UTC')}}
  AND metricType IN {STATE_TYPES_SQL}
"""  # noqa: S608
FRESH_SQL = TRANSITIONS_SQL.format(where=f"(entityType, entityId, metricType, userId) IN ({_CHANGED})")
DIFF_SQL = f"""
WITH
    fresh AS ({FRESH_SQL}),
    stored AS (
        SELECT {_KEY}, hour, delta FROM {TABLE} FINAL
        WHERE kind = 'key' AND subject IN (SELECT subject FROM fresh)
          AND ({_KEY}) IN (SELECT {_KEY} FROM fresh)
    )
SELECT 'new' AS src, {_KEY}, hour, delta FROM fresh
UNION ALL
SELECT 'old', {_KEY}, hour, delta FROM stored
UNION ALL
SELECT toString(kind), subject, metric, '', '', 0, 0, hour, delta FROM {TABLE} FINAL
WHERE kind IN ('cell', 'day') AND subject IN (SELECT subject FROM fresh)
  AND (subject, metric, hour) IN (
      SELECT subject, metric, hour FROM fresh UNION ALL SELECT subject, metric, hour FROM stored
      UNION ALL SELECT subject, metric, toStartOfDay(hour) FROM fresh
      UNION ALL SELECT subject, metric, toStartOfDay(hour) FROM stored)
"""  # noqa: S608

# In cluster mode DIFF_SQL's IN over ``stored`` nests a GLOBAL IN in another one's subquery, which the query analyzer
# of ClickHouse 24.3+ refuses ("Invalid local IN function name globalIn"). There the same rows come in three round
# trips, each IN over a temporary table the client sends along: the fresh changes, then the stored changes of those
# keys, then the cells both touch.
FRESH_STRUCTURE = (
    "subject Int64, metric String, keyType String, entityType String, entityId Int64, actor Int64, hour DateTime('UTC')"
)
STORED_SQL = f"""
SELECT 'old', {_KEY}, hour, delta FROM {TABLE} FINAL
WHERE kind = 'key' AND subject IN (SELECT subject FROM _fresh) AND ({_KEY}) IN (SELECT {_KEY} FROM _fresh)
"""  # noqa: S608
CELLS_STRUCTURE = "subject Int64, metric String, hour DateTime('UTC')"
CELLS_SQL = f"""
SELECT toString(kind), subject, metric, '', '', 0, 0, hour, delta FROM {TABLE} FINAL
WHERE kind IN ('cell', 'day') AND subject IN (SELECT subject FROM _cells)
  AND (subject, metric, hour) IN (SELECT subject, metric, hour FROM _cells)
"""  # noqa: S608

# A rebuild, one family of state types at a time and one share of its keys at a time (shares are disjoint, and each
# statement stays well within the client's timeout): the key rows, then the sums, one share of users at a time.
_SHARE = "cityHash64({of}) % {{share_count:UInt64}} = {{share:UInt64}}"
ROWS_PER_SHARE = 500_000
_FAMILY_SHARE = "metricType IN {types:Array(String)} AND " + _SHARE.format(of="entityId, userId")
REBUILD_KEYS_SQL = f"""
INSERT INTO {TABLE} ({", ".join(COLUMNS)})
SELECT subject, metric, 'key', keyType, entityType, entityId, actor, hour, delta, '', {{version:UInt64}}
FROM ({TRANSITIONS_SQL.format(where=_FAMILY_SHARE)})
WHERE delta != 0
"""  # noqa: S608
REBUILD_CELLS_SQL = f"""
INSERT INTO {TABLE} ({", ".join(COLUMNS)})
SELECT subject, metric, cell.1 AS cell_kind, '', '', 0, 0, cell.2 AS cell_at, sum(delta), '', {{version:UInt64}}
FROM {TABLE}
ARRAY JOIN [('cell', hour), ('day', toStartOfDay(hour))] AS cell
WHERE kind = 'key' AND {_SHARE.format(of="subject")}
GROUP BY subject, metric, cell_kind, cell_at
"""  # noqa: S608
FAMILY_ROWS_SQL = "SELECT count() FROM entityMetricEvents WHERE metricType IN {types:Array(String)}"
FAMILIES = (["Follow"], ["Upload"], sorted(m.value for m in REACTION_TYPES.values()))

Key = tuple[int, str, str, str, int, int]


class Timeline(ChangelogJob):
    """The timeline on the changelog (see the module's text): its position is the table's own cut."""

    name = "timeline"

    def __init__(self) -> None:
        self.cut: tuple[datetime, str, int] | None = None
        self.version = 0

    def position(self, rt: Runtime, engine_now: datetime) -> datetime | None:
        self.cut = read_cut(rt.clickhouse)
        self.version = max(int(engine_now.timestamp() * 1000), (self.cut[2] + 1) if self.cut else 0)
        return self.cut[0] - changelog.INFLIGHT_MARGIN if self.cut else None

    def stale(self, rt: Runtime, run: Slice) -> bool:
        return self.cut is not None and self.cut[1] != run.excluded_set

    def full(self, rt: Runtime, run: Slice) -> JobReport:
        keys = rebuild(rt.clickhouse, run.until, run.excluded_set, self.version)
        return JobReport("update_timeline", "rebuild", changed=keys)

    def incremental(self, rt: Runtime, run: Slice) -> JobReport | None:
        ch, version, until, excluded_set = rt.clickhouse, self.version, run.until, run.excluded_set
        params = run.params()
        new: dict[Key, dict[datetime, int]] = defaultdict(dict)
        old: dict[Key, dict[datetime, int]] = defaultdict(dict)
        cells: dict[tuple[str, int, str, datetime], int] = {}
        for src, subject, metric, key_type, entity_type, entity_id, actor, hour, delta in _diff_rows(ch, params):
            key = (int(subject), str(metric), str(key_type), str(entity_type), int(entity_id), int(actor))
            if src == "new":
                new[key][as_utc(hour)] = int(delta)
            elif src == "old":
                old[key][as_utc(hour)] = int(delta)
            else:
                cells[(str(src), key[0], key[1], as_utc(hour))] = int(delta)
        rows: list[list[Any]] = []
        moved: dict[tuple[str, int, str, datetime], int] = defaultdict(int)
        for key, changes in new.items():
            stored = old.get(key, {})
            for hour in changes.keys() | stored.keys():
                now_delta, was = changes.get(hour, 0), stored.get(hour, 0)
                if now_delta != was:
                    rows.append([*key[:2], "key", *key[2:], hour, now_delta, "", version])
                    moved[("cell", key[0], key[1], hour)] += now_delta - was
                    moved[("day", key[0], key[1], hour.replace(hour=0))] += now_delta - was
        for (kind, subject, metric, hour), change in moved.items():
            if change:
                total = cells.get((kind, subject, metric, hour), 0) + change
                rows.append([subject, metric, kind, "", "", 0, 0, hour, total, "", version])
        rows.append(cut_row(until, excluded_set, version))
        if len(rows) > INCREMENTAL_MAX_ROWS:  # a bulk import: one insert must stay one block, whole or nothing
            return None
        failpoints.hit(failpoints.TIMELINE_BEFORE_INSERT)
        ch.insert(TABLE, rows, COLUMNS)
        return JobReport(
            "update_timeline",
            "incremental",
            users=len({k[0] for k in new}),
            changed=len(rows) - 1,
        )


def update_timeline(rt: Runtime, full: bool | None = None) -> JobReport:
    """The timeline (see the module's text); ``full`` forces a rebuild."""
    return run_on_changelog(rt, Timeline(), full)


def _diff_rows(ch: ClickHouse, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """DIFF_SQL's rows: the changed keys' changes now ('new') and stored ('old'), and the cells they touch."""
    if ch.cluster is None:
        return ch.rows(DIFF_SQL, params)
    fresh = [("new", *row) for row in ch.rows(FRESH_SQL, params)]
    if not fresh:
        return []
    stored = ch.rows_with_table(STORED_SQL, "_fresh", FRESH_STRUCTURE, [row[1:8] for row in fresh])
    touched = set()
    for row in fresh + stored:
        subject, metric, hour = row[1], row[2], as_utc(row[7])
        touched.update({(subject, metric, hour), (subject, metric, hour.replace(hour=0))})
    return fresh + stored + ch.rows_with_table(CELLS_SQL, "_cells", CELLS_STRUCTURE, sorted(touched))


def rebuild(ch: ClickHouse, until: datetime, excluded_set: str, version: int) -> int:
    """Derive the whole table from the log; the cut goes in last. Returns the number of key rows."""
    ch.truncate(TABLE)
    for types in FAMILIES:
        events = int(ch.rows(FAMILY_ROWS_SQL, {"types": types})[0][0])
        shares = 1 + events // ROWS_PER_SHARE
        for share in range(shares):
            ch.command(REBUILD_KEYS_SQL, {"types": types, "version": version, "share_count": shares, "share": share})
    keys = int(ch.rows(f"SELECT count() FROM {TABLE} WHERE kind = 'key'")[0][0])  # noqa: S608
    shares = 1 + keys // ROWS_PER_SHARE
    for share in range(shares):
        ch.command(REBUILD_CELLS_SQL, {"version": version, "share_count": shares, "share": share})
    ch.insert(TABLE, [cut_row(until, excluded_set, version)], COLUMNS)
    return keys
