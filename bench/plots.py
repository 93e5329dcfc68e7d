"""PNG figures for ``bench read`` and ``bench seeds``: latency distributions per read path, how a miss grows with the
event log, and the seeds' scorecard.

matplotlib is a development dependency: without it the benchmarks print their tables and say that no figure was
drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.seeds_card import Line

log = logging.getLogger(__name__)


def _pyplot() -> Any | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (a development dependency): no figures drawn")
        return None
    return plt


def latencies(
    samples: Mapping[str, Sequence[float]],
    path: Path,
    title: str,
    goals: Sequence[tuple[float, str]] = ((5.0, "hit goal 5 ms"), (50.0, "miss goal 50 ms")),
) -> Path | None:
    """One horizontal box per read path (whiskers at p1/p99, log scale), the goals as dashed lines."""
    plt = _pyplot()
    if plt is None or not samples:
        return None
    names = list(samples)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.5))
    ax.boxplot(
        [list(samples[n]) for n in names], orientation="horizontal", whis=(1, 99), showfliers=True, tick_labels=names
    )
    ax.set_xscale("log")
    ax.set_xlabel("ms per call (log scale)")
    ax.set_title(title)
    for goal, label in goals:
        ax.axvline(goal, linestyle="--", linewidth=0.8, color="grey")
        ax.text(goal, len(names) + 0.4, label, fontsize=7, color="grey", ha="center")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def growth(rows: Sequence[Mapping[str, float]], path: Path, title: str) -> Path | None:
    """Miss latency (p50 and p99) against the size of the event log, with and without the snapshot."""
    plt = _pyplot()
    if plt is None or not rows:
        return None
    events = [r["events"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label, style in (
        ("metrics_miss", "100 random users, snapshot", "-o"),
        ("metrics_full", "100 random users, full computation", "--o"),
        ("top_miss", "100 most-followed users, snapshot", "-s"),
        ("top_full", "100 most-followed users, full computation", "--s"),
        ("reactions_miss", "reactions, 100 images, snapshot", "-^"),
        ("reactions_full", "reactions, 100 images, latest-state table", "--^"),
    ):
        if all(f"{key}_p99_ms" in r for r in rows):
            ax.plot(events, [r[f"{key}_p99_ms"] for r in rows], style, label=f"{label} (p99)")
    ax.axhline(50.0, linestyle=":", color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events in the log (100,000 users)")
    ax.set_ylabel("ms per call, p99")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scorecard(cards: Mapping[str, Sequence[Line]], path: Path) -> Path | None:
    """The scorecard as a table: a row per seed line, a column per shape with the verdict, green when met."""
    plt = _pyplot()
    if plt is None or not cards:
        return None
    shapes = list(cards)
    first = cards[shapes[0]]
    cells = [[line.seed, line.target, *(cards[s][i].verdict for s in shapes)] for i, line in enumerate(first)]
    colors = [
        ["white", "white", *("#c8e6c9" if cards[s][i].met else "#ffcdd2" for s in shapes)] for i in range(len(first))
    ]
    fig, ax = plt.subplots(figsize=(11, 0.4 * len(first) + 1.2))
    ax.axis("off")
    table = ax.table(
        cellText=cells,
        cellColours=colors,
        colLabels=["seed line", "target", *shapes],
        colWidths=[0.38, 0.38, *([0.24 / len(shapes)] * len(shapes))],
        loc="center",
        cellLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.4)
    ax.set_title("bench seeds: the seeds' success metrics")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
