"""ClickHouse cluster mode on a cluster of its own: 2 shards x 2 replicas of the local server (and ZooKeeper where
the machine has it), started for this module.

- a replica stopped during writes and reads: reads stay exact on the other replica (also when the stopped node is
  the one the process talks to), a write that reaches its shard fails as transient (the flusher retries it) rather
  than being half-stored, and after the restart the write lands on both replicas: nothing is lost;
- a whole shard unreachable: reads fail with a clear, transient error, never a sum over the shards that answered;
- replication "keeper": the migrations create Replicated tables registered under one ZooKeeper path per shard.

The oracle properties run against a cluster too: the CI's cluster pass runs the read, write, snapshot, timeline
and job property tests with CLICKHOUSE_URL listing a local cluster's nodes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.core.errors import ClickHouseUnavailable, TransientError
from app.core.metrics import EngagementWeights
from app.core.settings import Settings
from app.derived.metrics_from_log import compute_user_metrics
from app.local import clickhouse_cluster, clickhouse_server
from app.stores import clickhouse, migrations
from app.stores.clickhouse import ClickHouse, insert_events
from app.stores.cluster_schema import SHARDING_KEYS
from bench.oracle import E, Oracle
from tests.integration.test_read_properties import assert_metrics, to_event
from tests.stack import CLUSTER_MODE, ROOT

pytestmark = pytest.mark.skipif(
    not CLUSTER_MODE or not clickhouse_server.LIB_DIR.joinpath("libchdb.so").exists(),
    reason="the cluster pass (CLICKHOUSE_CLUSTER set, the local server library fetched): see docs/testing.md",
)

USERS = (1, 2, 3, 4, 5, 6)
BASE = Settings(DATA_DIR=str(ROOT / "own-cluster"))
CLUSTER_ROOT = clickhouse_cluster.root_of(BASE)
WEIGHTS = EngagementWeights.from_settings(BASE.engagement_weights)
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Settings, clickhouse_cluster.Layout]]:
    env = clickhouse_cluster.start(BASE, shards=2, replicas=2)
    layout = clickhouse_cluster.load_layout(CLUSTER_ROOT)
    assert layout is not None
    try:
        yield Settings(DATA_DIR=str(BASE.data_dir), **env), layout  # type: ignore[arg-type]
    finally:
        clickhouse_cluster.stop(BASE)


@pytest.fixture()
def ch(cluster: tuple[Settings, clickhouse_cluster.Layout]) -> Iterator[ClickHouse]:
    settings, layout = cluster
    handle = clickhouse.connect(settings)
    migrations.migrate(handle)
    for node in handle.nodes():
        for (table,) in node.rows(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree%' "
            "AND name != 'schema_migrations'"
        ):
            node.command(f"TRUNCATE TABLE `{table}`")
        node.close()
    yield handle
    for node in layout.nodes:  # every test leaves every node running
        clickhouse_cluster.start_node(CLUSTER_ROOT, node)
    handle.close()


def follows(n: int, first_actor: int = 100) -> list[E]:
    """``n`` follows spread over the users (their entities hash to both shards)."""
    at = NOW - timedelta(hours=2)
    return [
        E(str(uuid.uuid4()), "User", USERS[i % len(USERS)], first_actor + i, USERS[i % len(USERS)], "Follow", 1, at)
        for i in range(n)
    ]


def compute(ch: ClickHouse) -> dict[int, Any]:
    return compute_user_metrics(ch, USERS, weights=WEIGHTS, window=timedelta(days=BASE.engagement_window_days))


def written(ch: ClickHouse, layout: clickhouse_cluster.Layout) -> tuple[list[E], clickhouse_cluster.Node]:
    """Follows written to the cluster, and the node the handle uses."""
    history = follows(30)
    insert_events(ch, [to_event(e) for e in history])
    assert ch.cluster is not None
    return history, layout.nodes[ch.cluster.current]


def assert_exact(ch: ClickHouse, history: list[E]) -> None:
    oracle = Oracle(now=datetime.now(UTC), excluded=set())
    oracle.apply_all(history)
    computed = compute(ch)
    for uid in USERS:
        assert_metrics(computed[uid].to_json(), oracle.metrics(uid), uid)


def local_counts(layout: clickhouse_cluster.Layout, db: str) -> dict[int, int]:
    return {
        n.index: int(clickhouse_cluster.query(n, f"SELECT count() FROM `{db}`.entityMetricEvents_local"))
        for n in layout.nodes
    }


def test_a_replica_down_during_writes_and_reads_loses_nothing(ch, cluster):  # type: ignore[no-untyped-def]
    settings, layout = cluster
    first = follows(40)
    insert_events(ch, [to_event(e) for e in first])
    assert_exact(ch, first)
    # When replica 2 of shard 1 stops
    down = next(n for n in layout.nodes if n.shard == 1 and n.replica == 2)
    clickhouse_cluster.stop_node(CLUSTER_ROOT, down)
    # Then reads stay exact (the shard's other replica answers)
    assert_exact(ch, first)
    # And a write reaching that shard fails as transient, to be retried, rather than being stored on one replica
    second = follows(40, first_actor=1000)
    with pytest.raises(ClickHouseUnavailable) as refused:
        insert_events(ch, [to_event(e) for e in second])
    assert isinstance(refused.value, TransientError)
    # And after the restart the retried write lands on every replica: nothing lost, the replicas agree
    clickhouse_cluster.start_node(CLUSTER_ROOT, down)
    insert_events(ch, [to_event(e) for e in second])
    assert_exact(ch, first + second)
    counts = local_counts(layout, settings.clickhouse_db)
    for shard in (1, 2):
        replicas = {counts[n.index] for n in layout.nodes if n.shard == shard}
        assert len(replicas) == 1, counts  # both replicas of the shard hold the same rows
    assert sum(counts[n.index] for n in layout.nodes if n.replica == 1) >= len(first) + len(second)


def test_the_node_in_use_going_down_moves_reads_to_another(ch, cluster):  # type: ignore[no-untyped-def]
    _, layout = cluster
    history, in_use = written(ch, layout)
    clickhouse_cluster.stop_node(CLUSTER_ROOT, in_use)
    assert_exact(ch, history)  # the handle moved to the next node
    assert layout.nodes[ch.cluster.current] != in_use


def test_an_unreachable_shard_is_an_error_not_a_partial_sum(ch, cluster):  # type: ignore[no-untyped-def]
    _, layout = cluster
    history, in_use = written(ch, layout)
    # When every replica of the other shard stops
    for node in layout.nodes:
        if node.shard != in_use.shard:
            clickhouse_cluster.stop_node(CLUSTER_ROOT, node)
    # Then a read fails with a clear, transient error (the reader serves a stale copy or retries), not fewer followers
    with pytest.raises(ClickHouseUnavailable) as failed:
        compute(ch)
    assert isinstance(failed.value, TransientError)
    assert "ALL_CONNECTION_TRIES_FAILED" in str(failed.value) or "NETWORK_ERROR" in str(failed.value)
    # And once the shard is back, the numbers are exact again
    for node in layout.nodes:
        clickhouse_cluster.start_node(CLUSTER_ROOT, node)
    assert_exact(ch, history)


@pytest.mark.skipif(not clickhouse_cluster.zookeeper_available(), reason="no ZooKeeper on this machine")
def test_keeper_replication_creates_replicated_tables_under_one_path_per_shard(cluster):  # type: ignore[no-untyped-def]
    """The server build here creates Replicated tables and registers them in ZooKeeper but cannot replicate (no
    interserver endpoint: the tables stay read-only), so this checks the schema, not writes: every CREATE of the
    "keeper" schema is accepted by every node, under the ZooKeeper path of the node's shard."""
    settings, layout = cluster
    db = "usermetrics_keeper"
    keeper = settings.model_copy(update={"clickhouse_replication": "keeper"})
    handle = clickhouse.connect(keeper)
    handle.database = db
    nodes = handle.nodes()
    try:
        for node in nodes:
            node.command(f"CREATE DATABASE IF NOT EXISTS {db}")
            node.client.database = db
        handle.client.database = db
        for migration in migrations.discover():
            for statement in migrations.cluster_statements(handle, migration):
                if statement.every_node and statement.sql.startswith("CREATE TABLE"):
                    for node in nodes:
                        node.command(statement.sql)
        for node in layout.nodes:
            rows = clickhouse_cluster.query(
                node,
                "SELECT table, engine, zookeeper_path, replica_name FROM system.replicas "
                f"WHERE database = '{db}' ORDER BY table FORMAT TSV",
            ).splitlines()
            tables = {line.split("\t")[0]: line.split("\t") for line in rows}
            assert set(tables) == {f"{t}_local" for t in SHARDING_KEYS}, tables
            for table, engine, path, replica in tables.values():
                assert engine.startswith("Replicated")
                assert path == f"/clickhouse/tables/{node.shard:02d}/{db}/{table}"
                assert replica == f"r{node.replica}"
    finally:
        for node in layout.nodes:
            clickhouse_cluster.query(node, f"DROP DATABASE IF EXISTS {db} SYNC")
        for n in nodes:
            n.close()
        handle.close()


def test_the_layout_file_round_trips(cluster):  # type: ignore[no-untyped-def]
    settings, layout = cluster
    assert clickhouse_cluster.load_layout(CLUSTER_ROOT) == layout
    assert len({(n.shard, n.replica) for n in layout.nodes}) == 4
    assert settings.clickhouse_cluster == clickhouse_cluster.CLUSTER
