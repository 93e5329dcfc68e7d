"""``python -m app bench seeds``: the seeds' success metrics as one scorecard, measured in one run on the legacy
benchmark dataset with its PostgreSQL beside it (``bench.seeds_card`` holds the lines and their verdicts).

One run, per shape (embedded, and with ``--server`` a ClickHouse server):

1. the legacy dataset (``bench legacy``'s, seeded once into a PostgreSQL scratch database) and its baseline: the
   legacy queries of the same pages the web app reads, the legacy job (time and statements);
2. the migration phase in a process of its own (``bench.seeds_prepare``): backfill, jobs, the migration's checks,
   storage on both sides;
3. a worker on that ClickHouse and a private Redis (``bench.harness``), and a web app's process
   (``bench.seeds_client``) reading the page mix (``bench.page_mix``) through the real read services: latencies,
   misses, hit rate, PostgreSQL statements;
4. event-to-cached-metric latency through the same worker (``bench ingest``'s probe).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from app.core.settings import Settings
from app.legacy.baseline import legacy_reactions, legacy_user_metrics, run_legacy_job
from app.migration.seed import LegacySpec
from bench import plots
from bench.harness import BenchStack, Figures, bench_stack, percentile, put, run_module, timed
from bench.ingest import measure_latency, warm_up
from bench.legacy import LegacyDataset, StatementCounter, legacy_dataset, legacy_spec
from bench.page_mix import MixSpec, measured, page_mix
from bench.seeds_card import Line

SERVER_DATABASE = "usermetrics_bench_seeds"


@dataclass(frozen=True)
class SeedsSizes:
    legacy: LegacySpec
    pages: int  # measured page reads of the web app
    warmup_factor: int  # warm-up page reads per measured one
    baseline_pages: int  # reactions pages the legacy query is timed on
    baseline_metrics_pages: int  # metrics pages the legacy aggregation is timed on (about a second each at full size)
    compare_reactors: int  # reactors whose every reaction ``compare`` checks pair by pair
    redis_reactors: int  # reactors whose hashes are measured in Redis
    realtime_rate: float  # events/s of the real-time probe
    realtime_s: float

    @classmethod
    def pick(cls, quick: bool) -> SeedsSizes:
        if quick:  # about 150,000 legacy rows, 100,000 of them reactions
            return cls(legacy_spec(True, 5_000), 3_000, 3, 300, 300, 300, 1_000, 40.0, 5.0)
        return cls(legacy_spec(False), 12_000, 5, 1_000, 200, 2_000, 2_000, 40.0, 20.0)

    def mix(self) -> MixSpec:
        images = int(self.legacy.users * self.legacy.images_per_user)
        return MixSpec(self.legacy.users, images, self.pages, self.pages * self.warmup_factor)


def prepare_legacy(quick: bool, settings: Settings, database_url: str, reuse: bool) -> tuple[LegacyDataset, Figures]:
    """The legacy dataset, and the baseline measured on it: the legacy queries of the mix's pages, the job."""
    if not database_url.startswith("postgresql"):
        raise ValueError("bench seeds measures PostgreSQL's own sizes and load: give a PostgreSQL --database-url")
    sizes = SeedsSizes.pick(quick)
    legacy = legacy_dataset(settings, database_url, sizes.legacy, reuse)
    return legacy, baseline(legacy.engine, sizes)


def baseline(eng: Engine, sizes: SeedsSizes) -> Figures:
    spec = sizes.mix()
    pages = measured(spec, page_mix(spec))
    f = Figures()
    f["metrics_pages"] = sum(1 for p in pages if p.kind == "metrics")
    f["reactions_pages"] = len(pages) - f["metrics_pages"]
    metrics = [p for p in pages if p.kind == "metrics"][: sizes.baseline_metrics_pages]
    reactions = [p for p in pages if p.kind == "reactions"][: sizes.baseline_pages]
    for p in metrics[:5]:  # warm-up, untimed: connections, plans, PostgreSQL's buffers
        legacy_user_metrics(eng, p.ids)
    for p in reactions[:5]:
        legacy_reactions(eng, p.user, p.ids)
    counter = StatementCounter(eng)
    put(f, "legacy_metrics", [timed(legacy_user_metrics, eng, p.ids) for p in metrics])
    f["legacy_metrics_statements_per_read"] = counter.count / len(metrics)
    put(f, "legacy_reactions", [timed(legacy_reactions, eng, p.user, p.ids) for p in reactions])
    counter.count = 0
    f["legacy_job_s"] = timed(run_legacy_job, eng) / 1000
    f["legacy_job_statements"] = counter.count
    return f


@dataclass
class SeedsResult:
    """One shape's figures (the baseline's included) and the breakdowns behind them (bytes per ClickHouse table,
    mismatches per reason)."""

    figures: Figures
    details: dict[str, Any] = field(default_factory=dict)

    def card(self) -> dict[str, Any]:
        """What ``bench.seeds_card`` and ``--json`` read."""
        return {**self.figures, **self.details}


def measure(quick: bool, settings: Settings, legacy: LegacyDataset, base: Figures, server: str | None) -> SeedsResult:
    """One shape's figures (the baseline's included): embedded, or with ``server`` (``http://host:port``) a
    database of its own there."""
    sizes = SeedsSizes.pick(quick)
    if server is None:
        path = settings.data_path / "bench" / "seeds-clickhouse"
        shutil.rmtree(path, ignore_errors=True)
        url = f"chdb://{path}"
    else:
        url = f"{server.rstrip('/')}/{SERVER_DATABASE}"
    f = Figures()
    f.update(base)
    f.samples.update(base.samples)
    with bench_stack(url) as stack:
        env = {
            "CLICKHOUSE_URL": url,
            "REDIS_URL": stack.cache_url,
            "CELERY_BROKER_URL": stack.broker_url,
            "DATABASE_URL": legacy.url,
            "DATA_DIR": str(stack.root),
            "CLICKHOUSE_TIMEOUT_S": "600",
            "LOG_LEVEL": "WARNING",
        }
        payload = {
            "env": env,
            "database_url": legacy.url,
            "scratch_redis_url": stack.cache_url.rsplit("/", 1)[0] + "/2",
            "compare_reactors": sizes.compare_reactors,
            "redis_reactors": sizes.redis_reactors,
        }
        prepared: dict[str, Any] = run_module("bench.seeds_prepare", payload)
        details = {k: v for k, v in prepared.items() if isinstance(v, dict)}
        f.update({k: float(v) for k, v in prepared.items() if not isinstance(v, dict)})
        stack.start_worker()
        warm_up(stack)
        _forget_reads(stack)
        _read_pages(f, sizes.mix(), run_module("bench.seeds_client", {"env": env, "mix": sizes.mix().to_json()}))
        probe = measure_latency(stack, sizes.realtime_rate, sizes.realtime_s)
    seen = [s * 1000 for s in probe if s != float("inf")]
    f["realtime_events"], f["realtime_lost"] = len(probe), len(probe) - len(seen)
    f["realtime_p50_ms"], f["realtime_p99_ms"] = percentile(seen, 50), percentile(seen, 99)
    return SeedsResult(f, details)


def _forget_reads(stack: BenchStack) -> None:
    """The web app starts on a cold cache: the users' and reactors' hashes go; the jobs' state stays."""
    r = stack.cache
    for pattern in ("user:metrics:*", "reactions:*"):
        keys = list(r.scan_iter(pattern, count=1000))
        for i in range(0, len(keys), 1000):
            r.delete(*keys[i : i + 1000])


def _read_pages(f: Figures, spec: MixSpec, out: dict[str, Any]) -> None:
    f["creators_per_page"], f["images_per_page"] = spec.creators_per_page, spec.images_per_page
    for kind in ("metrics", "reactions"):
        at = [i for i, k in enumerate(out["kind"]) if k == kind]
        ms = [out["ms"][i] for i in at]
        misses = [out["ms"][i] for i in at if out["missed"][i]]
        put(f, kind, ms)
        f[f"{kind}_p999_ms"] = percentile(ms, 99.9)
        put(f, f"{kind}_miss", misses)
        f[f"{kind}_pages"] = len(at)
        f[f"{kind}_miss_pages"] = len(misses)
        lookups = sum(out["lookups"][i] for i in at)
        f[f"{kind}_hit_rate"] = 1 - sum(out["missed_ids"][i] for i in at) / lookups if lookups else float("nan")
        f[f"{kind}_page_hit_rate"] = 1 - len(misses) / len(at) if at else float("nan")
    f["client_sql_statements"] = out["sql_statements"]


PLOTTED = {
    "metrics": "metrics pages, all",
    "metrics_miss": "metrics pages with a miss",
    "legacy_metrics": "metrics pages, PostgreSQL (baseline)",
    "reactions": "reactions pages, all",
    "reactions_miss": "reactions pages with a miss",
    "legacy_reactions": "reactions pages, PostgreSQL (baseline)",
}


def draw(shapes: dict[str, SeedsResult], cards: dict[str, list[Line]], directory: Path) -> list[Path]:
    """The latencies of each shape as ``seeds-latency-{shape}.png``, and the scorecard as ``seeds-scorecard.png``."""
    drawn = []
    for shape, result in shapes.items():
        f = result.figures
        samples = {label: f.samples[key] for key, label in PLOTTED.items() if f.samples.get(key)}
        title = f"bench seeds, {shape}: ms per page read (web app process)"
        goals = ((10.0, "reactions goal 10 ms"), (50.0, "metrics goal 50 ms"))
        path = plots.latencies(samples, directory / f"seeds-latency-{shape}.png", title, goals)
        if path is not None:
            drawn.append(path)
    path = plots.scorecard(cards, directory / "seeds-scorecard.png")
    if path is not None:
        drawn.append(path)
    return drawn
