"""Cluster mode's schema as derived from the migrations, without a server (the cluster pass runs it on one)."""

from __future__ import annotations

import re

import pytest

from app.core.settings import Settings
from app.stores import cluster_schema
from app.stores.migrations import discover


def statements() -> list[str]:
    return [sql for migration in discover() for sql in migration.statements()]


def created_tables() -> set[str]:
    found = set()
    for sql in statements():
        match = re.match(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\(", sql)
        if match and "ENGINE = Memory" not in sql:
            found.add(match.group(1))
    return found


def test_every_table_of_the_migrations_has_a_sharding_key() -> None:
    assert created_tables() == set(cluster_schema.SHARDING_KEYS)


@pytest.mark.parametrize("replication", ["keeper", "distributed"])
def test_every_statement_translates_and_names_only_local_tables_in_views_and_alters(replication) -> None:  # type: ignore[no-untyped-def]
    for sql in statements():
        for out in cluster_schema.translate(sql, "usermetrics", "db", replication):
            if out.sql.startswith(("CREATE MATERIALIZED VIEW", "ALTER TABLE")):
                named = set(re.findall(r"\b(?:TO|FROM|ALTER TABLE) (\w+)", out.sql))
                assert named & set(cluster_schema.SHARDING_KEYS) == set(), out.sql
            if out.sql.startswith("INSERT"):
                assert not out.every_node  # data statements run once, through the Distributed tables


def test_the_event_log_is_sharded_by_entity_and_replicated_per_shard() -> None:
    (log_table,) = [s for s in statements() if s.startswith("CREATE TABLE IF NOT EXISTS entityMetricEvents")]
    local, distributed = cluster_schema.translate(log_table, "usermetrics", "db", "keeper")
    assert "CREATE TABLE IF NOT EXISTS entityMetricEvents_local" in local.sql
    assert (
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/entityMetricEvents_local', "
        "'{replica}')" in local.sql
    )
    assert distributed.sql.endswith(
        "ENGINE = Distributed('usermetrics', 'db', 'entityMetricEvents_local', cityHash64(entityType, entityId))"
    )
    plain, _ = cluster_schema.translate(log_table, "usermetrics", "db", "distributed")
    assert "ENGINE = ReplacingMergeTree" in plain.sql and "Replicated" not in plain.sql


def test_the_snapshot_table_becomes_a_replacing_table() -> None:
    (snapshot,) = [s for s in statements() if s.startswith("CREATE TABLE IF NOT EXISTS userMetricsSnapshot")]
    local, _ = cluster_schema.translate(snapshot, "usermetrics", "db", "keeper")
    assert "EmbeddedRocksDB" not in local.sql
    assert "ReplicatedReplacingMergeTree(" in local.sql and local.sql.endswith("computedAt) ORDER BY userId")


def test_cluster_settings_are_checked() -> None:
    urls = "http://a:8123/db,http://b:8123/db"
    # (explicit values: the environment of a test pass may name a server or a cluster)
    s = Settings(CLICKHOUSE_URL=urls, CLICKHOUSE_CLUSTER="usermetrics")  # type: ignore[call-arg]
    assert s.clickhouse_server_dsns == ["http://a:8123", "http://b:8123"] and s.clickhouse_db == "db"
    with pytest.raises(ValueError, match="set CLICKHOUSE_CLUSTER"):
        Settings(CLICKHOUSE_URL=urls, CLICKHOUSE_CLUSTER="")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="same database"):
        Settings(CLICKHOUSE_URL="http://a:8123/db,http://b:8123/other", CLICKHOUSE_CLUSTER="c")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="needs CLICKHOUSE_URL"):
        Settings(CLICKHOUSE_CLUSTER="c", CLICKHOUSE_URL="")  # type: ignore[call-arg]


def test_only_a_request_that_never_reached_its_node_moves_to_another() -> None:
    from app.core.errors import ClickHouseUnavailable
    from app.stores.clickhouse import _never_reached

    refused = ClickHouseUnavailable(
        "OperationalError: Error HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded (Caused by "
        "NewConnectionError(...: Failed to establish a new connection: [Errno 111] Connection refused'))"
    )
    timed_out = ClickHouseUnavailable("OperationalError: HTTPConnectionPool(host='h', port=8123): Read timed out.")
    assert _never_reached(refused) and not _never_reached(timed_out)
