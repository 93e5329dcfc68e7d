"""Cluster mode's schema, derived from the single-node migrations in ``sql/``.

Every MergeTree-family table ``X`` of a migration becomes, on every node:
- ``X_local``: the table itself, holding that node's shard (``Replicated...MergeTree`` with replication "keeper",
  the plain engine with replication "distributed");
- ``X``: a ``Distributed`` table over the ``X_local`` tables of the cluster, under the name every query uses, so
  that reads and jobs are exact across shards without knowing about them.

Materialized views read and write local tables (``entityMetricEvents_local`` -> ``stateByOwner_local``): a view
runs on the node that receives an insert, so every derived row lands on the shard of the event it comes from.
``ALTER TABLE`` goes to the local tables; ``Memory`` scratch tables stay local to the node a job runs on (queries
join them with ``GLOBAL`` semantics, see ``CLUSTER_QUERY_SETTINGS``); the key-value snapshot table, which a
key-value engine holds on one node only, becomes a ``ReplacingMergeTree`` read with ``FINAL``.

The sharding keys keep everything of one entity on one shard: every event of a state key
``(entityType, entityId, metricType, userId)`` and every redelivery of an event, so that versions (latest event
wins) and duplicates (same event id) resolve within a shard exactly as on one node, and a sum over shards adds
disjoint parts. Tables a job writes are sharded by the column their replacing key starts with; the timeline, whose
every run is one insert that must apply whole, lives on one shard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Replication = Literal["keeper", "distributed"]

LOCAL_SUFFIX = "_local"

# The Distributed table's sharding expression, per table. A test keeps this list equal to the migrations' tables.
SHARDING_KEYS: dict[str, str] = {
    # The log and everything its views derive: by entity (a view writes on the event's own shard anyway; the key is
    # what an INSERT ... SELECT through the Distributed table uses, and it must agree).
    "entityMetricEvents": "cityHash64(entityType, entityId)",
    "stateByOwner": "cityHash64(entityType, entityId)",
    "stateByActor": "cityHash64(entityType, entityId)",
    "eventArrivals": "cityHash64(entityType, entityId)",
    "engagementContrib": "cityHash64(entityType, entityId)",
    # Partial sums and registries whose readers aggregate across shards (sum, uniqExactMerge, argMax by eventId).
    "additiveDaily": "cityHash64(ownerId)",
    "eventIds": "cityHash64(eventId)",
    # Job and operator tables: one row per key, replaced by version.
    "excludedUsers": "cityHash64(userId)",
    "engagementCurrent": "cityHash64(userId)",
    "engagementTrend": "cityHash64(userId)",
    "userMetricsSnapshot": "cityHash64(userId)",
    "reactionSnapshot": "cityHash64(userId)",
    # One shard: a timeline run is one insert that must apply whole (its rows and its cut), and an insert is whole
    # only within one shard.
    "metricTimeline": "0",
    "backfillCheckpoints": "cityHash64(name)",
    "engagementRuns": "cityHash64(stamp)",
    # The insights' histories: every row of one creator on one shard (a key's versions resolve there).
    "followHistory": "cityHash64(followee)",
    "reactionHistory": "cityHash64(ownerId)",
    "insightCuts": "cityHash64(name)",
    # Achievements: every row of one user on one shard (a tier's versions resolve there).
    "achievementsEarned": "cityHash64(userId)",
    "achievementsAnnounced": "cityHash64(userId)",
    "achievementsProgress": "cityHash64(userId)",
}

# Tables whose single-node engine cannot be sharded or replicated as is: the cluster engine and key instead.
CLUSTER_ENGINES: dict[str, str] = {
    "userMetricsSnapshot": "ReplacingMergeTree(computedAt) ORDER BY userId",
    "reactionSnapshot": "ReplacingMergeTree(computedAt) ORDER BY (userId, imageId)",
}


def as_deployed(sql: str, table: str, clustered: bool) -> str:
    """``sql`` reading ``table`` (one of ``CLUSTER_ENGINES``) as this deployment keeps it: a key-value table on one
    server, its replacing twin read with ``FINAL`` in cluster mode."""
    return sql.replace(f"FROM {table}", f"FROM {table} FINAL") if clustered else sql


# Settings of every query in cluster mode:
# - inserts into a Distributed table return once every shard has the rows (the default queues them for a
#   background sender, which would acknowledge an event before it is stored);
# - IN and JOIN run their right side once, on the node the query came to, and send it to the shards: the right side
#   may be a node-local scratch table, and a subquery over a Distributed table must not run once per shard;
# - a shard with no replica answering fails the query (never a silent partial sum);
# - INSERT ... SELECT between Distributed tables runs on the node the query came to: the engine's default (2) runs it
#   on one replica of each shard and writes that replica's local table only, which leaves the other replicas
#   without the rows when the Distributed engine is what replicates.
CLUSTER_QUERY_SETTINGS: dict[str, int] = {
    "distributed_foreground_insert": 1,
    "parallel_distributed_insert_select": 0,
    "prefer_global_in_and_join": 1,
    "skip_unavailable_shards": 0,
}

_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\s*\(", re.S)
_CREATE_AS = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+) AS (\w+) ENGINE = Memory$", re.S)
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w+)(\(([^)]*)\))?")
_ROCKS = re.compile(r"ENGINE\s*=\s*EmbeddedRocksDB\s+PRIMARY KEY (\w+|\([\w, ]+\))", re.S)
_VIEW = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS", re.S)
_ALTER = re.compile(r"^ALTER TABLE (\w+)\b", re.S)
_INSERT = re.compile(r"^INSERT INTO (\w+)\b", re.S)


@dataclass(frozen=True)
class ClusterStatement:
    """One statement of a migration as cluster mode runs it: on every node (DDL) or once, on any node (DML)."""

    sql: str
    every_node: bool


def local_name(table: str) -> str:
    return table + LOCAL_SUFFIX


def _localize_sources(sql: str) -> str:
    """``FROM X`` of a view's query names X's local table: a view sees the inserts of its own node."""
    return re.sub(
        r"\bFROM (\w+)\b",
        lambda m: f"FROM {local_name(m.group(1))}" if m.group(1) in SHARDING_KEYS else m.group(0),
        sql,
    )


def _replicated(sql: str, table: str) -> str:
    """The table's MergeTree engine as its Replicated twin, one ZooKeeper path per shard and table."""
    match = _ENGINE.search(sql)
    if match is None or not match.group(1).endswith("MergeTree"):
        raise ValueError(f"cluster mode: the engine of {table} is not a MergeTree")
    args = [f"'/clickhouse/tables/{{shard}}/{{database}}/{local_name(table)}'", "'{replica}'"]
    if match.group(3):
        args.append(match.group(3))
    engine = f"ENGINE = Replicated{match.group(1)}({', '.join(args)})"
    return sql[: match.start()] + engine + sql[match.end() :]


def translate(statement: str, cluster: str, database: str, replication: Replication) -> list[ClusterStatement]:
    """A single-node migration statement as the statements that apply it to a cluster."""
    if _CREATE_AS.match(statement) or (_CREATE_TABLE.match(statement) and "ENGINE = Memory" in statement):
        return [ClusterStatement(statement, every_node=True)]  # a node-local scratch table
    if match := _CREATE_TABLE.match(statement):
        table = match.group(1)
        if table not in SHARDING_KEYS:
            raise ValueError(f"cluster mode: no sharding key for table {table} (app/stores/cluster_schema.py)")
        local = statement.replace(f"EXISTS {table}", f"EXISTS {local_name(table)}", 1)
        if table in CLUSTER_ENGINES:
            local = _ROCKS.sub(f"ENGINE = {CLUSTER_ENGINES[table]}", local)
        if replication == "keeper":
            local = _replicated(local, table)
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {table} AS {local_name(table)} "
            f"ENGINE = Distributed('{cluster}', '{database}', '{local_name(table)}', {SHARDING_KEYS[table]})"
        )
        return [ClusterStatement(local, every_node=True), ClusterStatement(distributed, every_node=True)]
    if match := _VIEW.match(statement):
        view, target = match.groups()
        head = f"CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO {local_name(target)} AS"
        return [ClusterStatement(head + _localize_sources(statement[match.end() :]), every_node=True)]
    if match := _ALTER.match(statement):
        return [ClusterStatement(f"ALTER TABLE {local_name(match.group(1))}" + statement[match.end() :], True)]
    if _INSERT.match(statement):
        return [ClusterStatement(statement, every_node=False)]
    raise ValueError(f"cluster mode cannot apply this statement: {statement[:80]}")
