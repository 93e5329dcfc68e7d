"""The benchmark figures are drawn (matplotlib, a development dependency) as PNG files."""

from __future__ import annotations

from pathlib import Path

from bench import plots


def test_latency_and_growth_figures_are_drawn(tmp_path: Path) -> None:
    drawn = plots.latencies({"hits": [1.0, 1.5, 2.0], "misses": [20.0, 25.0, 40.0]}, tmp_path / "l.png", "t")
    rows = [
        {
            "events": n,
            "metrics_miss_p99_ms": 20.0,
            "metrics_full_p99_ms": 50.0 * i,
            "top_miss_p99_ms": 20.0,
            "top_full_p99_ms": 90.0,
        }
        for i, n in enumerate((1e6, 1e7, 3e7), start=1)
    ]
    curve = plots.growth(rows, tmp_path / "g.png", "t")
    for path in (drawn, curve):
        assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
