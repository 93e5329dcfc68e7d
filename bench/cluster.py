"""``python -m app bench cluster``: what a sharded, replicated ClickHouse adds to inserts and misses, beside one server
in the same run.

Both shapes run here on loopback: one local server, and the local cluster of 2 shards x 2 replicas
(``app.local.clickhouse_cluster``, replication "distributed": every insert is written to both replicas of its
shard). Each gets the same generated event log in a database of its own, then:
- inserts: events per second in batches of 500 (every materialized view included), for a fixed time;
- metrics misses: 100 random users computed from the aggregate tables (no cache, no snapshot), p50 and p99;
- reactions misses: one user's latest reactions on 100 images, p50 and p99.
Every node of the cluster shares this machine's two cores with the others and with the client, so the figures show
the cost of the fan-out (a query per shard, a write per replica), not the throughput more hosts would add.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import timedelta

from app.core.metrics import EngagementWeights
from app.core.settings import Settings
from app.derived.metrics_from_log import compute_user_metrics
from app.local import clickhouse_cluster, clickhouse_server
from app.read.reactions_service import latest_reactions
from app.stores import clickhouse, migrations
from app.stores.clickhouse import ClickHouse
from bench.capacity import insert_rate
from bench.dataset import DatasetSpec, generate

DATABASE = "usermetrics_bench_cluster"
PAGE = 100


@dataclass
class ClusterResult:
    events: int
    figures: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, str, str]]:
        f = self.figures

        def ratio(key: str) -> str:
            return f"{f[f'cluster_{key}'] / f[f'single_{key}']:.2f}x" if f.get(f"single_{key}") else "-"

        rows = [("inserts, events/s", f"{f['single_insert']:,.0f}", f"{f['cluster_insert']:,.0f}", ratio("insert"))]
        for key, label in (("metrics", "metrics miss, 100 users"), ("reactions", "reactions miss, 100 images")):
            for q in ("p50", "p99"):
                name = f"{key}_{q}"
                rows.append(
                    (f"{label}, {q} ms", f"{f[f'single_{name}']:.1f}", f"{f[f'cluster_{name}']:.1f}", ratio(name))
                )
        return rows


def _spec(quick: bool) -> DatasetSpec:
    return DatasetSpec(events=200_000 if quick else 2_000_000, users=2_000 if quick else 20_000)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _measure(ch: ClickHouse, spec: DatasetSpec, prefix: str, f: dict[str, float], quick: bool) -> None:
    migrations.migrate(ch)
    generate(ch, spec)
    weights = EngagementWeights.from_settings(Settings().engagement_weights)
    rnd = random.Random(11)  # noqa: S311 - the same users and pages for both shapes
    rounds = 20 if quick else 60
    metrics, reactions = [], []
    for _ in range(rounds):
        users = rnd.sample(range(1, spec.users + 1), 100)
        started = time.perf_counter()
        compute_user_metrics(ch, users, weights=weights, window=timedelta(days=30))
        metrics.append((time.perf_counter() - started) * 1000)
        first = rnd.randint(1, spec.images - PAGE)
        started = time.perf_counter()
        latest_reactions(ch, rnd.randint(1, spec.users), range(first, first + PAGE))
        reactions.append((time.perf_counter() - started) * 1000)
    f[f"{prefix}_metrics_p50"], f[f"{prefix}_metrics_p99"] = _percentiles(metrics)
    f[f"{prefix}_reactions_p50"], f[f"{prefix}_reactions_p99"] = _percentiles(reactions)
    f[f"{prefix}_insert"] = insert_rate(ch, 3.0 if quick else 10.0)


def run(quick: bool, settings: Settings) -> ClusterResult:
    spec = _spec(quick)
    result = ClusterResult(spec.events)
    bench = settings.model_copy(update={"data_dir": settings.data_path / "bench"})
    single_paths = clickhouse_server.ServerPaths(bench.data_path / "cluster-single")
    try:
        url = clickhouse_server.start(single_paths)
        single = clickhouse.connect(settings.model_copy(update={"clickhouse_url": f"{url}/{DATABASE}"}))
        single.command(f"DROP DATABASE IF EXISTS {DATABASE}")
        single = clickhouse.connect(settings.model_copy(update={"clickhouse_url": f"{url}/{DATABASE}"}))
        _measure(single, spec, "single", result.figures, quick)
        single.command(f"DROP DATABASE IF EXISTS {DATABASE}")
    finally:
        clickhouse_server.stop(single_paths)
    try:
        env = clickhouse_cluster.start(bench, shards=2, replicas=2)
        urls = ",".join(u.rsplit("/", 1)[0] + f"/{DATABASE}" for u in env["CLICKHOUSE_URL"].split(","))
        on_cluster = bench.model_copy(
            update={
                "clickhouse_url": urls,
                "clickhouse_cluster": env["CLICKHOUSE_CLUSTER"],
                "clickhouse_replication": "distributed",
            }
        )
        ch = clickhouse.connect(on_cluster)
        _measure(ch, spec, "cluster", result.figures, quick)
    finally:
        clickhouse_cluster.stop(bench)
    return result
