"""``python -m app bench legacy``: the legacy PostgreSQL aggregation against this project, on the same data.

A legacy dataset is generated (``seed-legacy``'s generator) in its own database (``--database-url``, default a
SQLite file under ``DATA_DIR/bench``; the tables there are dropped and created again), backfilled into a fresh
embedded ClickHouse, and measured in one run:

- the legacy per-user aggregation for all users (the job that ran every minute) vs this project's full engagement
  + rank recompute and its incremental run after 10,000 new events;
- metrics of 100 users from PostgreSQL vs the new read path (hits and misses);
- a user's reactions on 100 images: the indexed legacy query vs ``get_user_reactions`` (and the number of SQL
  statements the new path sends to PostgreSQL: zero);
- backfill rows/s;
- PostgreSQL statements and seconds per minute of steady traffic (the legacy job once a minute plus one metric
  read per second) before the cutover, and after it (reads served by Redis/ClickHouse, no job).
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, event, select

from app.caches import metrics_cache
from app.core.settings import Settings
from app.derived.changelog import INFLIGHT_MARGIN
from app.jobs.engagement import recompute_engagement
from app.jobs.metrics_snapshot import snapshot_metrics
from app.jobs.ranks import recompute_ranks
from app.legacy import db
from app.legacy.baseline import legacy_reactions, legacy_user_metrics, run_legacy_job
from app.legacy.models import Collection, Image, ImageReaction, Model, Post, User, UserEngagement
from app.migration.backfill import backfill
from app.migration.seed import LegacySpec, seed
from app.read.clickhouse_sources import clickhouse_complete_source, clickhouse_reaction_source
from app.read.metrics_service import UserMetricsQueryService
from app.read.reactions_service import UserReactionQueryService
from app.stores import clickhouse, migrations
from app.stores.runtime import Runtime
from bench.harness import percentile, private_runtime

READS_PER_MINUTE = 60


@dataclass
class LegacyResult:
    figures: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, str]]:
        f = self.figures
        return [
            (
                "dataset",
                f"{f['users']:,.0f} users, {f['legacy_rows']:,.0f} legacy rows",
                f"seeded at {f['seed_rows_per_s']:,.0f} rows/s" if "seed_rows_per_s" in f else "reused (--reuse)",
            ),
            ("legacy aggregation, all users", f"{f['legacy_job_s']:.2f} s", "the job that ran every minute"),
            (
                "full engagement + ranks",
                f"{f['full_s']:.2f} s",
                f"{f['legacy_job_s'] / f['full_s']:.1f}x faster (goal >= 2x)",
            ),
            (
                "incremental after 10,000 events",
                f"{f['incremental_s']:.3f} s",
                f"{f['legacy_job_s'] / f['incremental_s']:.0f}x faster (goal >= 50x)",
            ),
            ("metrics, 100 users, PostgreSQL", f"p50 {f['pg_metrics_p50_ms']:.1f} ms", ""),
            (
                "metrics, 100 users, hits",
                f"p50 {f['hit_p50_ms']:.2f} ms",
                f"{f['pg_metrics_p50_ms'] / f['hit_p50_ms']:.0f}x faster (goal >= 20x)",
            ),
            (
                "metrics, 100 users, misses (from the snapshot)",
                f"p50 {f['miss_p50_ms']:.1f} ms, p99 {f['miss_p99_ms']:.1f} ms",
                f"{f['pg_metrics_p50_ms'] / f['miss_p50_ms']:.1f}x",
            ),
            ("reactions, 100 images, legacy indexed", f"p50 {f['pg_reactions_p50_ms']:.2f} ms", ""),
            (
                "reactions, 100 images, get_user_reactions",
                f"p50 {f['reactions_p50_ms']:.2f} ms",
                f"{f['pg_reactions_p50_ms'] / f['reactions_p50_ms']:.1f}x faster; "
                f"{f['reactions_pg_statements']:.0f} PostgreSQL statements",
            ),
            (
                "backfill",
                f"{f['backfill_rows_per_s']:,.0f} rows/s",
                f"{f['backfill_rows']:,.0f} rows via {'the engine' if f['backfill_via_engine'] else 'Python'}; "
                "goal >= 100,000 rows/s",
            ),
            (
                "PostgreSQL work per minute, before cutover",
                f"{f['pg_before_statements']:,.0f} statements, {f['pg_before_s']:.2f} s",
                f"legacy job + {READS_PER_MINUTE} reads",
            ),
            (
                "PostgreSQL work per minute, after cutover",
                f"{f['pg_after_statements']:,.0f} statements, {f['pg_after_s']:.2f} s",
                "goal 0 for metrics",
            ),
        ]


class StatementCounter:
    def __init__(self, eng: Engine) -> None:
        self.count = 0
        event.listen(eng, "before_cursor_execute", self._on)

    def _on(self, *_: Any) -> None:
        self.count += 1


def _ms(fn: Any, *args: Any) -> float:
    started = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - started) * 1000


def legacy_spec(quick: bool, users: int | None = None) -> LegacySpec:
    """The legacy dataset of a run. Full size: 100,000 users and about 10 million legacy rows (reactions dominate,
    as on the site)."""
    if quick:
        return LegacySpec(users=users or 2_000)
    return LegacySpec(users=users or 100_000, follows_per_user=15, images_per_user=3, reactions_per_user=95)


@dataclass
class LegacyDataset:
    """A seeded legacy database: its engine, rows per table, and the seeding rate (None when reused)."""

    engine: Engine
    url: str
    counts: dict[str, int]
    seed_rows_per_s: float | None


def legacy_dataset(settings: Settings, database_url: str | None, spec: LegacySpec, reuse: bool) -> LegacyDataset:
    """Seed ``spec`` into ``database_url`` (default a SQLite file under ``DATA_DIR/bench``; its legacy tables are
    dropped and created again), or with ``reuse`` keep a dataset already seeded there for as many users."""
    bench_dir = settings.data_path / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{bench_dir / 'legacy.sqlite3'}"
    # The legacy side gets a PostgreSQL planned as a production one on SSDs would be (random_page_cost 1.1, no JIT
    # for short queries): the baseline is the old design at its best, not a badly tuned database.
    connect_args = {"options": "-c random_page_cost=1.1 -c jit=off"} if url.startswith("postgresql") else {}
    eng = create_engine(url, connect_args=connect_args)
    counts = _existing(eng, spec) if reuse else None
    if counts is not None:
        return LegacyDataset(eng, url, counts, None)
    db.drop_schema(eng)
    db.create_schema(eng)
    started = time.perf_counter()
    counts = seed(eng, spec)
    return LegacyDataset(eng, url, counts, sum(counts.values()) / (time.perf_counter() - started))


def run(
    quick: bool, settings: Settings, database_url: str | None, users: int | None = None, reuse: bool = False
) -> LegacyResult:
    spec = legacy_spec(quick, users)
    legacy = legacy_dataset(settings, database_url, spec, reuse)
    result = LegacyResult()
    f = result.figures
    f["users"] = spec.users
    if legacy.seed_rows_per_s is not None:
        f["seed_rows_per_s"] = legacy.seed_rows_per_s
    f["legacy_rows"] = sum(legacy.counts.values())
    ch_path = settings.data_path / "bench" / "legacy-clickhouse"
    shutil.rmtree(ch_path, ignore_errors=True)
    s = settings.model_copy(update={"clickhouse_url": f"chdb://{ch_path}", "database_url": legacy.url})
    ch = clickhouse.connect(s)
    migrations.migrate(ch)
    with private_runtime(s, ch, "legacy") as rt:
        _measure(rt, legacy.engine, spec, f)
    ch.close()
    return result


def _existing(eng: Engine, spec: LegacySpec) -> dict[str, int] | None:
    """Row counts of a dataset already seeded for ``spec`` (same number of users), or None."""
    from sqlalchemy import func, inspect

    if not inspect(eng).has_table("User"):
        return None
    with eng.connect() as conn:
        if conn.execute(select(func.count()).select_from(User)).scalar_one() != spec.users:
            return None
        return {
            m.__tablename__: int(conn.execute(select(func.count()).select_from(m)).scalar_one())
            for m in (User, Model, Post, Image, Collection, UserEngagement, ImageReaction)
        }


def _measure(rt: Runtime, eng: Engine, spec: LegacySpec, f: dict[str, float]) -> None:
    rnd = random.Random(3)  # noqa: S311 - workload sampling
    report = backfill(rt, eng)
    f["backfill_rows_per_s"] = report.rows_per_s
    f["backfill_rows"] = sum(report.rows.values())
    f["backfill_via_engine"] = 1.0 if report.via == "engine" else 0.0
    started = time.perf_counter()
    run_legacy_job(eng)
    f["legacy_job_s"] = time.perf_counter() - started
    # The incremental run looks back INFLIGHT_MARGIN past its predecessor for inserts in flight; let the backfill's
    # last rows age out of that margin, as they would on a live site, so that it sees the 10,000 new events only.
    time.sleep(max(0.0, INFLIGHT_MARGIN.total_seconds() + 0.5 - f["legacy_job_s"]))
    f["full_s"] = recompute_engagement(rt, full=True).seconds + recompute_ranks(rt).seconds
    from bench.dataset import CHUNK_SQL

    rt.clickhouse.command(
        CHUNK_SQL,
        {
            "users": spec.users,
            "images": spec.users * 2,
            "start_at": datetime.now(UTC).replace(microsecond=0),
            "span_ms": 1000,
            "start": 10**9,
            "count": 10_000,
        },
    )
    f["incremental_s"] = recompute_engagement(rt, full=False).seconds

    batches = [[rnd.randint(1, spec.users) for _ in range(100)] for _ in range(30)]
    f["pg_metrics_p50_ms"] = percentile([_ms(legacy_user_metrics, eng, b) for b in batches[:10]], 50)
    service = UserMetricsQueryService(rt)
    # Misses read the metrics snapshot: its full run, once the new events are past the look-back margin.
    time.sleep(INFLIGHT_MARGIN.total_seconds() + 0.5)
    f["snapshot_full_s"] = snapshot_metrics(rt, full=True).seconds
    misses = []
    for b in batches:
        rt.redis.delete(*{metrics_cache.metrics_key(u) for u in b})  # a miss; the jobs' state stays
        misses.append(_ms(service.get_user_metrics, b))
    f["miss_p50_ms"] = percentile(misses, 50)
    f["miss_p99_ms"] = percentile(misses, 99)
    f["hit_p50_ms"] = percentile([_ms(service.get_user_metrics, batches[i % 30]) for i in range(300)], 50)

    with eng.connect() as conn:
        reactors = [int(u) for (u,) in conn.execute(select(ImageReaction.userId).distinct().limit(30))]
    pages = [(u, [rnd.randint(1, spec.users * 3) for _ in range(100)]) for u in reactors]
    f["pg_reactions_p50_ms"] = percentile([_ms(legacy_reactions, eng, u, p) for u, p in pages], 50)
    reactions = UserReactionQueryService(
        rt.redis, clickhouse_reaction_source(rt), fills=None, complete=clickhouse_complete_source(rt)
    )
    for u, p in pages:
        reactions.get_user_reactions(u, p)  # fill
    counter = StatementCounter(eng)
    f["reactions_p50_ms"] = percentile([_ms(reactions.get_user_reactions, u, p) for u, p in pages * 10], 50)
    f["reactions_pg_statements"] = counter.count

    # One minute of steady traffic: the legacy job plus 60 reads of 1 user (1/s), against PostgreSQL...
    counter.count = 0
    started = time.perf_counter()
    run_legacy_job(eng)
    for i in range(READS_PER_MINUTE):
        legacy_user_metrics(eng, [1 + i % spec.users])
    f["pg_before_s"], f["pg_before_statements"] = time.perf_counter() - started, counter.count
    # ... and after the cutover: the same reads through the new read path; no job in PostgreSQL.
    counter.count = 0
    started = time.perf_counter()
    for i in range(READS_PER_MINUTE):
        service.get_user_metrics([1 + i % spec.users])
    f["pg_after_s"], f["pg_after_statements"] = (
        0.0 if counter.count == 0 else time.perf_counter() - started,
        counter.count,
    )
