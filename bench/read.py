"""``python -m app bench read``: the read path on a large generated event log.

The dataset (10 million events, 100,000 users; ``--quick``: 300,000 and 5,000) is generated once into
``DATA_DIR/bench/events`` (its own embedded ClickHouse) and reused by later runs. The caches live in a private
``redis-server`` started for the run. Measured, in this process, through the real services:

- ``get_user_metrics`` for 100 random users and for the 100 most-followed users: all misses (cache flushed before
  each call), served from the metrics snapshot (``snapshot_user_metrics`` runs first, timed), against the full
  computation without it in the same run; and all hits, timed from a separate client process (what a web app
  sees), beside the same hits timed in this process;
- ``get_user_reactions`` of an active user on 100 images: misses, served from the reactions snapshot, against the
  latest-state table without it in the same run; and hits;
- the cache hit rate of a Zipf-distributed read workload (s = 1.1, 20 users per read) after a warm-up of 30
  times its size; the baseline is the naive read of the same users from the raw log (the seed's argMax queries);
- one user's history over 365 days (a typical user and the most active one).
"""

from __future__ import annotations

import gc
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from rich.progress import Progress

from app.caches import metrics_cache
from app.cli.common import err
from app.core.settings import Settings
from app.derived.changelog import INFLIGHT_MARGIN
from app.derived.metrics_from_log import compute_user_metrics
from app.jobs.metrics_snapshot import snapshot_metrics
from app.jobs.reactions_snapshot import snapshot_reactions
from app.jobs.timeline import update_timeline
from app.ops.simulate import Zipf
from app.read.history import metric_history
from app.read.metrics_service import UserMetricsQueryService
from app.stores import clickhouse, migrations
from app.stores.runtime import Runtime
from bench import plots
from bench.dataset import DatasetSpec, existing, generate, location
from bench.harness import CHECKOUT, Figures, percentile, private_runtime, put, steady, timed
from bench.read_reactions import measure_reactions

GOALS_MS = {"metrics_hit": 5.0, "metrics_miss": 50.0, "reactions_hit": 2.0, "reactions_miss": 20.0, "history": 100.0}
GOAL_HIT_RATE = 0.95
WARMUP_FACTOR = 30
AGGREGATE_TABLES = ("stateByOwner", "stateByActor", "additiveDaily")


@dataclass
class ReadSizes:
    spec: DatasetSpec
    trials: int
    hit_trials: int
    zipf_reads: int

    @classmethod
    def pick(cls, quick: bool) -> ReadSizes:
        if quick:
            return cls(DatasetSpec(events=300_000, users=5_000), trials=15, hit_trials=100, zipf_reads=300)
        return cls(DatasetSpec(events=10_000_000, users=100_000), trials=60, hit_trials=500, zipf_reads=2_000)


@dataclass
class ReadResult:
    figures: Figures = field(default_factory=lambda: Figures())

    def rows(self) -> list[tuple[str, str, str]]:
        f = self.figures

        def lat(key: str) -> str:
            return f"p50 {f[key + '_p50_ms']:.1f} ms, p99 {f[key + '_p99_ms']:.1f} ms"

        miss_goal = f"goal p99 < {GOALS_MS['metrics_miss']:.0f} ms"
        return [
            ("dataset", f"{f['events']:,.0f} events, {f['users']:,.0f} users", f"generated in {f['generate_s']:.0f} s"),
            (
                "snapshot job: full run / incremental run",
                f"{f['snapshot_full_s']:.1f} s / {f['snapshot_incremental_s']:.2f} s",
                f"{f['snapshot_users']:,.0f} users",
            ),
            (
                "history timeline: rebuild / incremental run",
                f"{f['timeline_rebuild_s']:.1f} s / {f['timeline_incremental_s']:.2f} s",
                f"{f['timeline_keys']:,.0f} key changes",
            ),
            *(
                row
                for key, who in (("metrics", "100 users"), ("top", "100 most-followed users"))
                for row in (
                    (f"metrics, {who}, misses", lat(f"{key}_miss") + _rows(f, f"{key}_miss"), miss_goal),
                    (
                        "  without the snapshot",
                        lat(f"{key}_full") + _rows(f, f"{key}_full"),
                        f"snapshot {f[f'{key}_full_p99_ms'] / f[f'{key}_miss_p99_ms']:.1f}x faster (p99)",
                    ),
                )
            ),
            (
                "  baseline: raw-log argMax",
                lat("naive"),
                f"aggregates {f['naive_p50_ms'] / f['metrics_miss_p50_ms']:.1f}x faster (p50)",
            ),
            (
                "metrics, 100 users, hits (client process)",
                lat("client_hit"),
                f"goal p99 < {GOALS_MS['metrics_hit']:.0f} ms",
            ),
            ("  the same, timed in the bench process", lat("metrics_hit"), "beside the engine's threads"),
            (
                "reactions snapshot: full run / incremental run",
                f"{f['reactions_snapshot_full_s']:.1f} s / {f['reactions_snapshot_incremental_s']:.2f} s",
                f"{f['reaction_keys']:,.0f} latest-state rows",
            ),
            (
                "reactions, 100 images, misses",
                lat("reactions_miss") + _rows(f, "reactions_miss"),
                f"goal p99 < {GOALS_MS['reactions_miss']:.0f} ms",
            ),
            (
                "  without the snapshot",
                lat("reactions_full") + _rows(f, "reactions_full"),
                f"snapshot {f['reactions_full_p99_ms'] / f['reactions_miss_p99_ms']:.1f}x faster (p99)",
            ),
            ("reactions, 100 images, hits", lat("reactions_hit"), f"goal p99 < {GOALS_MS['reactions_hit']:.0f} ms"),
            (
                "hit rate, Zipf reads after warm-up",
                f"{f['hit_rate'] * 100:.1f}% ({f['zipf_lookups']:,.0f} lookups, {f['warm_users']:,.0f} users warm)",
                f"goal > {GOAL_HIT_RATE * 100:.0f}%",
            ),
            ("history 365 days, typical user, slowest metric", _history(f, "typical"), "goal < 100 ms"),
            ("history 365 days, most active user, slowest metric", _history(f, "top"), "goal < 100 ms"),
            (
                "  without the timeline (raw log)",
                _history(f, "top_raw"),
                f"timeline {f['history_top_raw_ms'] / f['history_top_ms']:.1f}x faster",
            ),
        ]


HISTORY_METRICS = ("followerCount", "reactionCount", "downloadCount")


def _history(f: dict[str, float], who: str) -> str:
    each = ", ".join(f"{m} {f[f'history_{who}_{m}_ms']:.0f}" for m in HISTORY_METRICS)
    return f"{f[f'history_{who}_ms']:.1f} ms ({each})"


def _rows(f: dict[str, float], key: str) -> str:
    """Rows the engine read per call (server mode: the query summaries), when known."""
    rows = f.get(key + "_rows")
    return "" if rows is None else f", {rows:,.0f} rows read"


def prepare(ch: clickhouse.ClickHouse, spec: DatasetSpec) -> float:
    """Reuse the dataset if this database holds it, else generate it (with a progress bar). Returns seconds."""
    migrations.migrate(ch)
    if existing(ch, spec) is not None:
        return 0.0
    for (table,) in ch.rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT LIKE '%View%' "
        "AND name != 'schema_migrations'"
    ):
        ch.command(f"TRUNCATE TABLE `{table}`")
    started = time.perf_counter()
    with Progress(console=err) as progress:
        task = progress.add_task(f"generating {spec.events:,} events", total=spec.events)
        generate(ch, spec, lambda n: progress.advance(task, n))
        merge = progress.add_task("merging aggregate tables", total=len(AGGREGATE_TABLES))
        for table in AGGREGATE_TABLES:  # what background merges do over time; makes runs comparable
            ch.command(f"OPTIMIZE TABLE {table} FINAL")
            progress.advance(merge)
    return time.perf_counter() - started


def settle(ch: clickhouse.ClickHouse, timeout_s: float = 300.0) -> float:
    """Wait until background merges are done (on 2 cores they would compete with the reads). Returns seconds."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if not ch.rows("SELECT count() FROM system.merges WHERE database = currentDatabase()")[0][0]:
            break
        time.sleep(0.5)
    return time.perf_counter() - started


def run(quick: bool, settings: Settings, server: str | None = None) -> ReadResult:
    """On the embedded engine, or with ``server`` (``http://host:port``) on a ClickHouse server."""
    sizes = ReadSizes.pick(quick)
    spec = sizes.spec
    bench_settings = location(settings, "events-quick" if quick else "events", server)
    ch = clickhouse.connect(bench_settings)
    result = ReadResult()
    f = result.figures
    f["events"], f["users"] = spec.events, spec.users
    f["generate_s"] = prepare(ch, spec)
    f["settle_s"] = settle(ch)
    with private_runtime(bench_settings, ch, "read") as rt:
        _measure(rt, sizes, f)
    ch.close()
    return result


def _measure(rt: Runtime, sizes: ReadSizes, f: Figures) -> None:
    spec = sizes.spec
    rnd = random.Random(42)  # noqa: S311 - workload sampling, not security
    r = rt.redis
    service = UserMetricsQueryService(rt)
    batches = [[rnd.randint(1, spec.users) for _ in range(100)] for _ in range(sizes.trials)]

    take_snapshot(rt, f, generated=bool(f["generate_s"]))
    started = time.perf_counter()
    snapshot_metrics(rt)  # nothing changed since: the incremental run's fixed cost
    f["snapshot_incremental_s"] = time.perf_counter() - started
    started = time.perf_counter()
    snapshot_reactions(rt)
    f["reactions_snapshot_incremental_s"] = time.perf_counter() - started
    started = time.perf_counter()
    f["timeline_keys"] = update_timeline(rt, full=True).changed
    f["timeline_rebuild_s"] = time.perf_counter() - started
    f["settle_s"] += settle(rt.clickhouse)  # the rebuild's parts merge before anything is timed
    started = time.perf_counter()
    update_timeline(rt)
    f["timeline_incremental_s"] = time.perf_counter() - started
    measure_misses(rt, f, batches)
    hit = steady(lambda i: service.get_user_metrics(batches[i % len(batches)]), sizes.hit_trials)
    put(f, "metrics_hit", hit)
    put(f, "client_hit", _client_hits(rt, batches, sizes.hit_trials))

    measure_reactions(rt, f, sizes.trials, sizes.hit_trials, spec.images, rnd)

    # Hit rate under Zipf reads: warm up with 30 times as many lookups as are measured (a small share of one
    # cache TTL of a busy site's traffic), filled in batches of 500 users, then measure.
    r.flushdb()
    draw = Zipf(spec.users, 1.1, rnd).draw
    warm = sorted({draw() for _ in range(sizes.zipf_reads * 20 * WARMUP_FACTOR)})
    for i in range(0, len(warm), 500):
        service.get_user_metrics(warm[i : i + 500])
    lookups = hits = 0
    for _ in range(sizes.zipf_reads):
        users = list({draw() for _ in range(20)})
        cached = r.pipeline(transaction=False)
        for u in users:
            cached.exists(f"user:metrics:{u}")
        hits += sum(int(x) for x in cached.execute())
        lookups += len(users)
        service.get_user_metrics(users)
    f["hit_rate"], f["zipf_lookups"], f["warm_users"] = hits / lookups, lookups, len(warm)

    # History over 365 days: a typical user (median activity) and the most active one.
    typical, top = (int(u) for u in rt.clickhouse.rows(_TYPICAL_AND_TOP_SQL)[0])
    start = datetime.now(UTC) - timedelta(days=365)
    raw = partial(metric_history, rt.clickhouse, timeline=False)
    for name, user, read in (
        ("typical", typical, service.get_user_metric_history),
        ("top", top, service.get_user_metric_history),
        ("top_raw", top, lambda u, m, s: raw(u, m, s, datetime.now(UTC))),
    ):
        for metric in HISTORY_METRICS:  # each metric's median of three; the figure is the slowest metric's
            runs = [timed(read, user, metric, start) for _ in range(3)]
            f[f"history_{name}_{metric}_ms"] = percentile(runs, 50)
        f[f"history_{name}_ms"] = max(f[f"history_{name}_{m}_ms"] for m in HISTORY_METRICS)

    # Baseline, last (its scans would disturb the other phases): the same users' metrics from the raw log, the
    # seed's argMax queries, which is what every read cost before the aggregate tables.
    naive = [timed(_raw_log_metrics, rt, users) for users in batches]
    put(f, "naive", naive)


def take_snapshot(rt: Runtime, f: Figures, generated: bool, reactions: bool = True) -> None:
    """The snapshot the misses read: a full run, timed. Rows inserted within the look-back margin before a run count
    as changed, so a dataset generated just now waits it out first."""
    if generated:
        time.sleep(INFLIGHT_MARGIN.total_seconds())
    started = time.perf_counter()
    f["snapshot_users"] = snapshot_metrics(rt, full=True).users
    f["snapshot_full_s"] = time.perf_counter() - started
    if reactions:
        started = time.perf_counter()
        f["reaction_keys"] = snapshot_reactions(rt, full=True).changed
        f["reactions_snapshot_full_s"] = time.perf_counter() - started


def measure_misses(rt: Runtime, f: Figures, batches: list[list[int]]) -> None:
    """Misses of ``batches`` (``metrics_*``) and of the 100 most-followed users as often (``top_*``), through the
    read service (the snapshot) and computed in full without it (``*_full``)."""
    service = UserMetricsQueryService(rt)
    most_followed = [int(u) for (u,) in rt.clickhouse.rows(MOST_FOLLOWED_SQL)]
    full = partial(compute_user_metrics, rt.clickhouse, weights=rt.weights, window=rt.window)
    for name, work in (("metrics", batches), ("top", [most_followed] * len(batches))):
        misses(rt, f, f"{name}_miss", service.get_user_metrics, work)
        misses(rt, f, f"{name}_full", full, work)


def misses(rt: Runtime, f: Figures, key: str, call: Callable[[list[int]], Any], work: list[list[int]]) -> None:
    """Latencies of ``call`` on each batch with an empty cache, and the rows the engine read per call."""
    for users in work[:3]:  # warm-up, untimed: connections, code paths, the engine's caches of marks
        rt.redis.delete(*{metrics_cache.metrics_key(u) for u in users})
        call(users)
    gc.collect()
    times = []
    before = rt.clickhouse.read_rows
    for users in work:
        # The users' hashes only: the rest of the cache database (the jobs' state among it) stays, as in production.
        rt.redis.delete(*{metrics_cache.metrics_key(u) for u in users})
        times.append(timed(call, users))
    put(f, key, times)
    if not rt.clickhouse.embedded:  # the embedded engine reports no rows read
        f[key + "_rows"] = (rt.clickhouse.read_rows - before) / len(work)


def _client_hits(rt: Runtime, batches: list[list[int]], n: int) -> list[float]:
    """Hits timed by a separate client process (what a web app sees), the batches cached first."""
    service = UserMetricsQueryService(rt)
    for users in batches:
        service.get_user_metrics(users)
    out = subprocess.run(  # noqa: S603 - our own module, arguments we built
        [sys.executable, "-m", "bench.read_client", str(rt.settings.redis_url), json.dumps(batches), str(n)],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return [float(x) for x in json.loads(out.stdout)]


def _raw_log_metrics(rt: Runtime, users: list[int]) -> None:
    compute_user_metrics(rt.clickhouse, users, weights=rt.weights, window=rt.window, as_of=datetime.now(UTC))


# Plotted paths: sample key -> label.
PLOTTED = {
    "client_hit": "metrics hits (client process)",
    "metrics_miss": "metrics misses, 100 random users",
    "metrics_full": "the same, without the snapshot",
    "top_miss": "metrics misses, 100 most-followed",
    "top_full": "most-followed, without the snapshot",
    "reactions_hit": "reactions hits, 100 images",
    "reactions_miss": "reactions misses, 100 images",
    "reactions_full": "reactions misses, without the snapshot",
    "naive": "metrics from the raw log (baseline)",
}


def draw(result: ReadResult, directory: Path, shape: str) -> Path | None:
    """The latency distributions of ``result`` as ``read-latency-{shape}.png`` in ``directory``."""
    samples = {label: result.figures.samples[key] for key, label in PLOTTED.items() if key in result.figures.samples}
    title = f"bench read, {result.figures['events']:,.0f} events, {shape}: ms per call"
    return plots.latencies(samples, directory / f"read-latency-{shape}.png", title)


MOST_FOLLOWED_SQL = """
SELECT ownerId FROM stateByOwner FINAL WHERE metricType = 'Follow' AND isOn
GROUP BY ownerId ORDER BY count() DESC, ownerId LIMIT 100
"""
_TYPICAL_AND_TOP_SQL = """
SELECT toInt64(quantileExact(0.5)(ownerId)), toInt64(topK(1)(ownerId)[1])
FROM entityMetricEvents WHERE ownerId != 0
"""
