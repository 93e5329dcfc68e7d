"""``bench seeds``' scorecard: each seed line's verdict from given figures, the storage accounting from given sizes,
and the page mix (deterministic, Zipf-skewed, pages of distinct ids)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from bench import plots
from bench.page_mix import MixSpec, measured, page_mix
from bench.seeds_card import LOG_TABLE, Storage, at_least, below, less, lines, reduction, table

MB = 1024 * 1024


def _figures(**override: Any) -> dict[str, Any]:
    """Figures of a shape where every line is met; a test changes one."""
    f: dict[str, Any] = {
        "metrics_pages": 900,
        "creators_per_page": 20,
        "images_per_page": 50,
        "metrics_miss_p99_ms": 30.0,
        "legacy_metrics_p50_ms": 40.0,
        "legacy_metrics_p99_ms": 80.0,
        "legacy_metrics_statements_per_read": 6.0,
        "legacy_job_s": 1.5,
        "legacy_job_statements": 8,
        "client_sql_statements": 0,
        "realtime_p50_ms": 300.0,
        "realtime_p99_ms": 700.0,
        "realtime_events": 200,
        "realtime_lost": 0,
        "compare_unexplained": 0,
        "compare_mismatches": 12,
        "compare_values": 45_000,
        "compare_users": 5_000,
        "compare_reasons": {"deleted users": 12},
        "reactions_hit_rate": 0.97,
        "reactions_page_hit_rate": 0.8,
        "reactions_pages": 2_100,
        "reactions_miss_pages": 200,
        "reactions_miss_p99_ms": 9.0,
        "legacy_reactions_p50_ms": 1.0,
        "legacy_reactions_p99_ms": 3.0,
        "verify_missing": 0,
        "verify_legacy_rows": 80_000,
        "verify_users_differing": 0,
        "verify_images_differing": 0,
        "compare_reaction_mismatches": 0,
        "compare_reaction_pairs": 3_000,
        "legacy_total_bytes": 100 * MB,
        "legacy_rows": 100_000,
        "legacy_flagged_rows": 80_000,
        "clickhouse_table_bytes": {LOG_TABLE: 5 * MB, "stateByActor": 4 * MB},
        "redis_bytes_per_pair": 10.0,
        "reaction_pairs": 70_000,
    }
    for kind, p99 in (("metrics", 20.0), ("reactions", 4.0)):
        f.update({f"{kind}_p50_ms": 1.0, f"{kind}_p99_ms": p99, f"{kind}_p999_ms": p99 * 2})
    f.update(override)
    return f


def _verdicts(f: dict[str, Any]) -> dict[str, bool]:
    return {line.seed: line.met for line in lines(f)}


def test_every_seed_line_is_on_the_card_and_met_when_its_figures_are() -> None:
    verdicts = _verdicts(_figures())
    assert len(verdicts) == 9
    assert all(verdicts.values())


def test_a_target_stated_as_below_is_not_met_at_the_limit_nor_unmeasured() -> None:
    assert below(9.99, 10.0)
    assert not below(10.0, 10.0)
    assert not below(math.nan, 10.0)
    assert at_least(0.8, 0.8)
    assert not at_least(math.nan, 0.8)
    assert not _verdicts(_figures(reactions_p99_ms=10.0))["Reaction query time < 10ms (p99)"]
    assert not _verdicts(_figures(metrics_p99_ms=50.0))["All user metrics available in < 50ms"]


def test_lines_fail_on_the_figure_they_judge() -> None:
    cases = {
        "Real-time metric updates (< 1 second delay)": {"realtime_lost": 1},
        "Accurate historical metrics": {"compare_unexplained": 1},
        "Cache hit rate > 95%": {"reactions_hit_rate": 0.95},
        "Zero data loss during migration": {"compare_reaction_mismatches": 1},
        "80% reduction in reaction-related database load": {"reactions_miss_pages": 500},
        "80% reduction in storage": {"redis_bytes_per_pair": 300.0},
    }
    for seed, override in cases.items():
        verdicts = _verdicts(_figures(**override))
        assert [s for s, met in verdicts.items() if not met] == [seed], seed
    # PostgreSQL statements the web app still sends count against both load lines.
    verdicts = _verdicts(_figures(client_sql_statements=600))
    assert [s for s, met in verdicts.items() if not met] == [
        "90% reduction in user metric query load",
        "80% reduction in reaction-related database load",
    ]


def test_the_load_reductions_count_the_legacy_job_and_a_query_per_page() -> None:
    # Given 900 metrics pages at 6 statements each and a job of 8: 5,408 statements before; 540 after is 90.0% fewer.
    assert _verdicts(_figures(client_sql_statements=540))["90% reduction in user metric query load"]
    assert not _verdicts(_figures(client_sql_statements=541))["90% reduction in user metric query load"]
    # 2,100 reactions pages, one PostgreSQL query each; 420 ClickHouse queries after is exactly 80% fewer.
    assert _verdicts(_figures(reactions_miss_pages=420))["80% reduction in reaction-related database load"]
    assert reduction(0.0, 1.0) != reduction(0.0, 1.0)  # no baseline: NaN, never met


def test_storage_counts_the_migrated_share_of_the_legacy_table_against_every_table_and_redis() -> None:
    store = Storage.of(_figures())
    assert store.legacy_same == 80 * MB  # 80% of the rows have a flag (Dislike is not migrated)
    assert store.clickhouse == 9 * MB
    assert store.log == 5 * MB
    assert store.redis == 700_000
    assert store.total == 9 * MB + 700_000
    assert math.isclose(store.reduction, 1 - (9 * MB + 700_000) / (80 * MB))
    assert store.log_reduction > store.reduction
    assert less(0.85) == "85% less" and less(-0.62) == "62% more"


def test_one_table_has_a_measured_column_per_shape_and_a_verdict_of_each() -> None:
    headers, rows = table({"embedded": _figures(), "server": _figures(reactions_p99_ms=12.0)})
    assert headers[2:4] == ["measured (embedded)", "measured (server)"]
    assert headers[:2] + headers[4:] == ["seed line", "target", "baseline (same run)", "verdict"]
    by_seed = {row[0]: row for row in rows}
    assert by_seed["Reaction query time < 10ms (p99)"][-1] == "met / NOT MET"
    assert by_seed["Cache hit rate > 95%"][-1] == "met / met"


def test_the_page_mix_is_deterministic_zipf_skewed_and_of_distinct_ids() -> None:
    spec = MixSpec(users=1_000, images=3_000, pages=2_000, warmup=500)
    pages = page_mix(spec)
    assert pages == page_mix(spec)
    assert len(pages) == 2_500 and len(measured(spec, pages)) == 2_000
    share = sum(p.kind == "metrics" for p in pages) / len(pages)
    assert 0.25 < share < 0.35
    for p in pages:
        assert len(set(p.ids)) == len(p.ids)
        assert len(p.ids) == (spec.creators_per_page if p.kind == "metrics" else spec.images_per_page)
        assert (p.user == 0) == (p.kind == "metrics")
    viewers = Counter(p.user for p in pages if p.kind == "reactions")
    assert viewers[1] > viewers[10] > viewers[100]  # popularity falls with the rank
    assert viewers[1] > 0.05 * sum(viewers.values())
    assert MixSpec.from_json(spec.to_json()) == spec


def test_the_scorecard_figure_is_drawn(tmp_path: Path) -> None:
    cards = {"embedded": lines(_figures()), "server": lines(_figures(reactions_p99_ms=12.0))}
    path = plots.scorecard(cards, tmp_path / "card.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
