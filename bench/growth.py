"""``python -m app bench read --growth``: cache misses at 1M, 10M and 30M events (100,000 users; ``--quick``: 100,000
to 1M events and 5,000 users), with and without the metrics snapshot, for 100 random and the 100 most-followed
users, and reactions misses of the most active reactors' pages with and without the reactions snapshot: a snapshot's
cost should stay flat while the full computation grows with the keys the users own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from app.core.settings import Settings
from app.stores import clickhouse
from bench import plots
from bench.dataset import DatasetSpec, location
from bench.harness import Figures, private_runtime
from bench.read import measure_misses, prepare, settle, take_snapshot
from bench.read_reactions import measure_reactions


@dataclass
class GrowthResult:
    """Misses at several sizes of the event log (100,000 users), with and without the snapshot."""

    points: list[Figures] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str, str]]:
        out = []
        for f in self.points:

            def cell(key: str, f: Figures = f) -> str:
                return f"p50 {f[key + '_p50_ms']:.0f} / p99 {f[key + '_p99_ms']:.0f} ms"

            out.append(
                (
                    f"{f['events']:,.0f} events",
                    f"metrics, 100 random users: snapshot {cell('metrics_miss')}; full {cell('metrics_full')}",
                    f"most-followed: snapshot {cell('top_miss')}; full {cell('top_full')}",
                )
            )
            out.append(
                (
                    "",
                    f"reactions, 100 images: snapshot {cell('reactions_miss')}; latest-state {cell('reactions_full')}",
                    f"the most active reactor: {f['top_reactor_keys']:,.0f} reaction keys",
                )
            )
        return out

    def figures(self) -> dict[str, Figures]:
        return {f"{f['events']:.0f}": f for f in self.points}


GROWTH_EVENTS = (1_000_000, 10_000_000, 30_000_000)
REACTION_HIT_TRIALS = 50
# The reaction keys (image, reaction) of the most active of the reactors whose pages are measured.
TOP_REACTOR_SQL = """
SELECT max(keys) FROM (
    SELECT count() AS keys FROM stateByActor
    WHERE metricType LIKE 'Reaction%' AND entityType = 'Image' AND userId < 1000 GROUP BY userId
)
"""
GROWTH_EVENTS_QUICK = (100_000, 300_000, 1_000_000)


def run(quick: bool, settings: Settings, server: str | None = None, trials: int = 30) -> GrowthResult:
    """Misses of 100 random and of the 100 most-followed users, and of the most active reactors' pages, against the
    size of the log, users fixed; on the embedded engine, or with ``server`` (``http://host:port``) on a server."""
    users = 5_000 if quick else 100_000
    out = GrowthResult()
    for events in GROWTH_EVENTS_QUICK if quick else GROWTH_EVENTS:
        spec = DatasetSpec(events=events, users=users)
        name = {(10_000_000, 100_000): "events", (300_000, 5_000): "events-quick"}.get(
            (events, users), f"events-{events}-{users}"
        )
        bench_settings = location(settings, name, server)
        ch = clickhouse.connect(bench_settings)
        f = Figures()
        f["events"] = events
        generated = prepare(ch, spec)
        settle(ch)
        with private_runtime(bench_settings, ch, "growth") as rt:
            take_snapshot(rt, f, generated=bool(generated))
            rnd = random.Random(7)  # noqa: S311 - workload sampling
            measure_misses(rt, f, [[rnd.randint(1, users) for _ in range(100)] for _ in range(trials)])
            measure_reactions(rt, f, trials, REACTION_HIT_TRIALS, spec.images, rnd)
            f["top_reactor_keys"] = float(rt.clickhouse.rows(TOP_REACTOR_SQL)[0][0])
        ch.close()
        out.points.append(f)
    return out


def draw_growth(result: GrowthResult, directory: Path, shape: str = "embedded") -> Path | None:
    """``read-growth.png`` for the embedded engine, ``read-growth-server.png`` for a server."""
    name = "read-growth.png" if shape == "embedded" else f"read-growth-{shape}.png"
    return plots.growth(result.points, directory / name, f"cache misses against the size of the log, {shape}")
