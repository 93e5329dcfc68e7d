"""``python -m app bench insights``: creator insights on the generated event log of ``bench read``.

On the same dataset (10 million events, 100,000 users, 400 days; ``--quick``: 300,000 events), for the 100
most-followed creators and 100 random creators, through ``UserInsightsService`` in this process: p50 / p99 of
growth over 365 days, retention over 12 weeks, audience over 30 days, activity over 28 days, and, after their jobs
ran (timed), peers and achievements. The four read-time insights are measured twice: from the log alone (before the
histories job ran: the design without it) and with the histories. The baseline, measured in the same run on a
sample of the same users, computes each insight at query time from the user's raw events replayed in Python
(``bench.insights_baseline``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.insights import histories
from app.insights.requests import InsightRequest
from app.insights.service import UserInsightsService
from app.jobs.achievements import award_achievements
from app.jobs.insight_histories import update_insight_histories
from app.jobs.peers import recompute_peers
from app.stores import clickhouse
from app.stores.runtime import Runtime
from bench import insights_baseline as baseline
from bench import plots
from bench.dataset import DatasetSpec, location
from bench.harness import Figures, private_runtime, put, steady
from bench.read import prepare, settle

GOALS_MS = {
    "growth": 100.0,
    "retention": 100.0,
    "audience": 100.0,
    "activity": 100.0,
    "peers": 5.0,
    "achievements": 20.0,
}
BASELINE_SAMPLE = 5  # users of each group the raw-log replay is timed on (it is slow)


def run(quick: bool, settings: Any, server: str | None = None) -> Figures:
    spec = DatasetSpec(events=300_000, users=5_000) if quick else DatasetSpec(events=10_000_000, users=100_000)
    bench_settings = location(settings, "events-quick" if quick else "events", server)
    ch = clickhouse.connect(bench_settings)
    f = Figures()
    f["events"], f["users"] = spec.events, spec.users
    f["generate_s"] = prepare(ch, spec)
    f["settle_s"] = settle(ch)
    with private_runtime(bench_settings, ch, "insights") as rt:
        _measure(rt, f)
    ch.close()
    return f


def _users(rt: Runtime) -> tuple[list[int], list[int]]:
    """The 100 most-followed users, and 100 random creators (users with an upload)."""
    ch = rt.clickhouse
    top = [
        int(u)
        for (u,) in ch.rows(
            "SELECT entityId FROM entityMetricEvents WHERE entityType = 'User' AND metricType = 'Follow' "
            "GROUP BY entityId ORDER BY count() DESC, entityId LIMIT 100"
        )
    ]
    creators = sorted(
        int(u) for (u,) in ch.rows("SELECT DISTINCT userId FROM stateByActor WHERE metricType = 'Upload'")
    )
    rnd = random.Random(7)  # noqa: S311 - workload sampling
    return top, rnd.sample(creators, min(100, len(creators)))


def _measure(rt: Runtime, f: Figures) -> None:
    top, random_creators = _users(rt)
    users = top + random_creators
    service = UserInsightsService(rt)
    as_of = rt.clickhouse.rows("SELECT max(createdAt) FROM entityMetricEvents")[0][0].astimezone(UTC)
    last = as_of.date()
    calls: dict[str, Callable[[int], Any]] = {
        "growth": lambda u: service.growth(u, last - timedelta(days=364), last, as_of=as_of),
        "retention": lambda u: service.retention(u, weeks=12, as_of=as_of),
        "audience": lambda u: service.audience(u, last - timedelta(days=29), last, as_of=as_of),
        "activity": lambda u: service.activity(u, days=28, tz="Europe/Berlin", as_of=as_of),
    }
    for table in (histories.FOLLOWS_TABLE, histories.REACTIONS_TABLE, histories.CUTS_TABLE):
        rt.clickhouse.command(f"TRUNCATE TABLE {table}")  # the log alone first: the design before the histories
    for kind, call in calls.items():
        _latencies(f, f"{kind}_log", call, top, random_creators)
    started = time.perf_counter()
    update_insight_histories(rt, True)
    f["histories_full_s"] = time.perf_counter() - started
    for table in (histories.FOLLOWS_TABLE, histories.REACTIONS_TABLE):  # what background merges do over time
        rt.clickhouse.command(f"OPTIMIZE TABLE {table} FINAL")
    started = time.perf_counter()
    update_insight_histories(rt)
    f["histories_incremental_s"] = time.perf_counter() - started
    settle(rt.clickhouse)  # the reads are measured in steady state, not beside the merges of the job's inserts
    for kind, call in calls.items():
        _latencies(f, kind, call, top, random_creators)
    started = time.perf_counter()
    recompute_peers(rt)
    f["peers_job_s"] = time.perf_counter() - started
    started = time.perf_counter()
    report = award_achievements(rt, True)
    f["achievements_job_s"] = time.perf_counter() - started
    f["achievements_users"] = report.users
    settle(rt.clickhouse)
    _latencies(f, "peers", service.peers, top, random_creators)
    _latencies(f, "achievements", service.achievements, top, random_creators)
    f["users_measured"] = len(users)
    _baseline(rt, f, top[:BASELINE_SAMPLE] + random_creators[:BASELINE_SAMPLE], as_of)


def _latencies(f: Figures, kind: str, call: Callable[[int], Any], top: list[int], others: list[int]) -> None:
    both = top + others
    values = steady(lambda i: call(both[i]), len(both))
    put(f, kind, values)
    put(f, f"{kind}_top", values[: len(top)])
    put(f, f"{kind}_random", values[len(top) :])


def _baseline(rt: Runtime, f: Figures, users: list[int], as_of: datetime) -> None:
    ch, last = rt.clickhouse, as_of.date()
    requests: dict[str, Callable[[int], InsightRequest]] = {
        "growth": lambda u: InsightRequest.of("growth", u, start=last - timedelta(days=364), end=last, as_of=as_of),
        "retention": lambda u: InsightRequest.of("retention", u, as_of=as_of),
        "audience": lambda u: InsightRequest.of("audience", u, start=last - timedelta(days=29), end=last, as_of=as_of),
        "activity": lambda u: InsightRequest.of("activity", u, tz="Europe/Berlin", as_of=as_of),
    }
    compute = {
        "growth": baseline.growth,
        "retention": baseline.retention,
        "audience": baseline.audience,
        "activity": baseline.activity,
    }
    for kind, make in requests.items():
        values = []
        for u in users:
            started = time.perf_counter()
            compute[kind](ch, make(u))
            values.append((time.perf_counter() - started) * 1000)
        put(f, f"{kind}_baseline", values)
    started = time.perf_counter()
    recompute_peers(rt)  # the population's values computed at query time: what a peers read costs without the job
    f["peers_baseline_p50_ms"] = f["peers_baseline_p99_ms"] = (time.perf_counter() - started) * 1000


def rows(f: Figures) -> list[tuple[str, str, str]]:
    def lat(key: str) -> str:
        return f"p50 {f[key + '_p50_ms']:.1f} ms, p99 {f[key + '_p99_ms']:.1f} ms"

    out = [
        ("dataset", f"{f['events']:,.0f} events, {f['users']:,.0f} users", f"generated in {f['generate_s']:.0f} s"),
        (
            "insights' histories: full run / incremental run with nothing new",
            f"{f['histories_full_s']:.1f} s / {f['histories_incremental_s']:.2f} s",
            "",
        ),
        (
            "recompute_peers / award_achievements (full)",
            f"{f['peers_job_s']:.1f} s / {f['achievements_job_s']:.1f} s",
            "",
        ),
    ]
    for kind, goal in GOALS_MS.items():
        met = "met" if f[f"{kind}_p99_ms"] < goal else "NOT met"
        base = f.get(f"{kind}_baseline_p99_ms")
        against = f"goal p99 < {goal:.0f} ms: {met}"
        if base:
            against += f"; raw-log replay p99 {base:.0f} ms ({base / f[f'{kind}_p99_ms']:.1f}x)"
        out.append((f"{kind}, 200 users", lat(kind), against))
        out.append(("  100 most-followed / 100 random", f"{lat(kind + '_top')} / {lat(kind + '_random')}", ""))
        if f"{kind}_log_p99_ms" in f:
            ratio = f[f"{kind}_log_p99_ms"] / f[f"{kind}_p99_ms"]
            out.append(
                ("  from the log alone (no histories)", lat(f"{kind}_log"), f"histories {ratio:.1f}x faster (p99)")
            )
    return out


def draw(results: dict[str, Figures], directory: Path) -> Path | None:
    """Every insight's latencies in every shape measured, one box each, with the goals."""
    samples = {
        f"{kind} ({shape})": f.samples[kind] for kind in GOALS_MS for shape, f in results.items() if kind in f.samples
    }
    goals = ((5.0, "peers 5 ms"), (20.0, "achievements 20 ms"), (100.0, "others 100 ms"))
    return plots.latencies(samples, directory / "insights-latency.png", "creator insights, 200 users", goals)
