"""The derived tables that a beat job keeps and readers use: their names, columns and marker rows, in one place
below both (sql/0009, sql/0010, sql/0011).

- ``userMetricsSnapshot``: every user's metrics as of the snapshot job's last run; row ``SENTINEL_USER`` carries
  the generation of the last finished full run. What the rows depend on besides the log and the excluded set
  (``metrics_basis``) and the full run's progress live in the job's state (``METRICS_JOB``).
- ``reactionSnapshot``: every user's reaction flags per image; row ``REACTIONS_SENTINEL`` carries the generation
  and the changelog position up to which the rows are exact, so that a reader needs nothing from Redis.
- ``metricTimeline``: every user's state counts hour by hour; its ``cut`` row is the position the table is exact
  up to, with the excluded set it was computed with.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from app.caches.reactions_cache import BIT_OF
from app.derived.changelog import EPOCH
from app.stores import cluster_schema
from app.stores.clickhouse import ClickHouse
from app.stores.runtime import Runtime

# userMetricsSnapshot
METRICS_JOB = "snapshot"
METRICS_TABLE = "userMetricsSnapshot"
METRICS_COLUMNS = [
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
SENTINEL_USER = 0  # user ids are positive; row 0 carries the generation of the last finished full run
FOREVER = datetime.fromisoformat("2200-01-01T00:00:00+00:00")  # no counting event in the window: never expires
METRICS_GENERATION_SQL = f"SELECT engagement FROM {METRICS_TABLE} WHERE userId = {SENTINEL_USER}"  # noqa: S608


def metrics_sql(sql: str, ch: ClickHouse) -> str:
    """``sql`` reading the metrics snapshot as this deployment keeps it (``cluster_schema.as_deployed``)."""
    return cluster_schema.as_deployed(sql, METRICS_TABLE, ch.cluster is not None)


def metrics_basis(rt: Runtime) -> str:
    """What the metrics snapshot's rows depend on besides the events and the excluded set: weights and window."""
    return json.dumps({"weights": rt.weights.params(), "window_s": rt.window.total_seconds()}, sort_keys=True)


# reactionSnapshot
REACTIONS_JOB = "reaction_snapshot"
REACTIONS_TABLE = "reactionSnapshot"
REACTIONS_COLUMNS = ["userId", "imageId", "flags", "versions", "computedAt"]
REACTIONS_SENTINEL = (0, 0)  # ids are positive: row (0, 0) is the generation of the last full run and the position
REACTION_NAMES = sorted(m.value for m in BIT_OF)
BITS = sorted(BIT_OF.values())
BIT_OF_NAME = {bit: metric.value for metric, bit in BIT_OF.items()}
SETS = "sets"  # in the sentinel row: the run kept every user's set row (user, 0), ``app.read.reactions_miss``
REACTIONS_GENERATION_SQL = f"SELECT versions FROM {REACTIONS_TABLE} WHERE userId = 0 AND imageId = 0"  # noqa: S608


def reactions_sql(sql: str, ch: ClickHouse) -> str:
    """``sql`` reading the reactions snapshot as this deployment keeps it (``cluster_schema.as_deployed``)."""
    return cluster_schema.as_deployed(sql, REACTIONS_TABLE, ch.cluster is not None)


def recorded_reactions_sentinel(ch: ClickHouse) -> list[list[str]]:
    """The reactions snapshot's sentinel row's values ([] when it has none): the generation, the position and
    ``SETS`` when the set rows are kept."""
    return [[str(x) for x in v] or [""] for (v,) in ch.rows(reactions_sql(REACTIONS_GENERATION_SQL, ch))]


# metricTimeline
TIMELINE_TABLE = "metricTimeline"
TIMELINE_COLUMNS = [
    "subject",
    "metric",
    "kind",
    "keyType",
    "entityType",
    "entityId",
    "actor",
    "hour",
    "delta",
    "note",
    "version",
]
CUT_WHERE = "subject = 0 AND metric = '' AND kind = 'cut'"
CUT_SQL = f"""
SELECT argMax(delta, version), argMax(note, version), max(version)
FROM {TIMELINE_TABLE}
WHERE {CUT_WHERE}
HAVING count() > 0
"""  # noqa: S608


def read_cut(ch: ClickHouse) -> tuple[datetime, str, int] | None:
    """The position the timeline is exact up to, the excluded set it was computed with, and its version."""
    rows = ch.rows(CUT_SQL)
    if not rows:
        return None
    cut_ms, note, version = rows[0]
    return EPOCH + timedelta(milliseconds=int(cut_ms)), str(note), int(version)


def cut_row(until: datetime, excluded_set: str, version: int) -> list[object]:
    """The timeline's ``cut`` row: exact up to ``until``, computed with ``excluded_set``."""
    return [0, "", "cut", "", "", 0, 0, EPOCH, int((until - EPOCH) / timedelta(milliseconds=1)), excluded_set, version]
