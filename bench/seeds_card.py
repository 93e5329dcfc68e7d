"""The scorecard of ``bench seeds``: each success-metric line of the two seed documents, its target, the figure
measured, the baseline measured in the same run, and met or not met. Pure functions of the figures (tested without
services); the measuring is in ``bench.seeds``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LOG_TABLE = "entityMetricEvents"
MB = 1024 * 1024


def reduction(before: float, after: float) -> float:
    """How much less ``after`` is than ``before``, as a share (1.0: all of it gone); NaN without a baseline."""
    return 1.0 - after / before if before > 0 else math.nan


def less(share: float) -> str:
    """A reduction as words: "85% less", or "62% more" when it grew."""
    return f"{share:.0%} less" if share >= 0 else f"{-share:.0%} more"


def below(value: float, limit: float) -> bool:
    """A "< limit" target: strictly below it; NaN (not measured) never meets it."""
    return not math.isnan(value) and value < limit


def at_least(value: float, floor: float) -> bool:
    return not math.isnan(value) and value >= floor


@dataclass(frozen=True)
class Storage:
    """The legacy table against what replaces it, for the same reactions.

    ``legacy_bytes`` is the table with its indexes (``pg_total_relation_size``); its Dislike rows are not migrated
    (no flag), so the legacy side counted is its share of flagged rows. The new side is the compressed bytes of every
    ClickHouse table the reactions alone fill (``tables``) plus their Redis hashes, all cached."""

    legacy_bytes: float
    legacy_rows: float
    flagged_rows: float
    tables: Mapping[str, float]
    redis_bytes_per_pair: float
    pairs: float

    @property
    def legacy_same(self) -> float:
        return self.legacy_bytes * self.flagged_rows / self.legacy_rows if self.legacy_rows else math.nan

    @property
    def clickhouse(self) -> float:
        return float(sum(self.tables.values()))

    @property
    def log(self) -> float:
        return float(self.tables.get(LOG_TABLE, 0))

    @property
    def redis(self) -> float:
        return self.redis_bytes_per_pair * self.pairs

    @property
    def total(self) -> float:
        return self.clickhouse + self.redis

    @property
    def reduction(self) -> float:
        return reduction(self.legacy_same, self.total)

    @property
    def log_reduction(self) -> float:
        """The event log alone (plus Redis) against the legacy table: what the seed's design, with no derived
        tables, would store."""
        return reduction(self.legacy_same, self.log + self.redis)

    @classmethod
    def of(cls, f: Mapping[str, Any]) -> Storage:
        return cls(
            legacy_bytes=float(f["legacy_total_bytes"]),
            legacy_rows=float(f["legacy_rows"]),
            flagged_rows=float(f["legacy_flagged_rows"]),
            tables={str(t): float(b) for t, b in f["clickhouse_table_bytes"].items()},
            redis_bytes_per_pair=float(f["redis_bytes_per_pair"]),
            pairs=float(f["reaction_pairs"]),
        )


@dataclass(frozen=True)
class Line:
    seed: str
    target: str
    measured: str
    baseline: str
    met: bool

    @property
    def verdict(self) -> str:
        return "met" if self.met else "NOT MET"


def _lat(f: Mapping[str, Any], key: str) -> str:
    return f"p50 {f[key + '_p50_ms']:.1f} / p99 {f[key + '_p99_ms']:.1f} / p99.9 {f[key + '_p999_ms']:.1f} ms"


def metrics_load(f: Mapping[str, Any]) -> tuple[float, float]:
    """PostgreSQL statements for the mix's metrics pages: before (the legacy job's run once, as each minute, plus a
    legacy read per page) and after (what the web app sent)."""
    before = f["legacy_job_statements"] + f["legacy_metrics_statements_per_read"] * f["metrics_pages"]
    return before, float(f["client_sql_statements"])


def reactions_load(f: Mapping[str, Any]) -> tuple[float, float]:
    """Database queries for the mix's reactions pages: before, one PostgreSQL query a page; after, one ClickHouse
    query a page with a miss (and what the web app sent to PostgreSQL)."""
    return float(f["reactions_pages"]), float(f["reactions_miss_pages"] + f["client_sql_statements"])


def lines(f: Mapping[str, Any]) -> list[Line]:
    """The scorecard of one shape's figures (with the legacy baseline's)."""
    m_before, m_after = metrics_load(f)
    r_before, r_after = reactions_load(f)
    store = Storage.of(f)
    reasons = ", ".join(f"{why} {n}" for why, n in sorted(f["compare_reasons"].items())) or "none"
    lost = f["verify_missing"] + f["verify_users_differing"] + f["verify_images_differing"]
    lost += f["compare_reaction_mismatches"]
    return [
        Line(
            "All user metrics available in < 50ms",
            "p99 < 50 ms, metrics pages, hits and misses",
            f"{_lat(f, 'metrics')} ({f['metrics_pages']:,.0f} pages of {f['creators_per_page']:.0f} users; "
            f"misses p99 {f['metrics_miss_p99_ms']:.1f} ms)",
            f"PostgreSQL p50 {f['legacy_metrics_p50_ms']:.1f} / p99 {f['legacy_metrics_p99_ms']:.1f} ms",
            below(f["metrics_p99_ms"], 50.0),
        ),
        Line(
            "90% reduction in user metric query load",
            ">= 90% fewer PostgreSQL statements",
            f"{m_after:,.0f} statements ({less(reduction(m_before, m_after))})",
            f"{m_before:,.0f} statements: the legacy job ({f['legacy_job_s']:.2f} s) and a query per page",
            at_least(reduction(m_before, m_after), 0.9),
        ),
        Line(
            "Real-time metric updates (< 1 second delay)",
            "p99 < 1 s, event sent to cached metric",
            f"p50 {f['realtime_p50_ms']:.0f} / p99 {f['realtime_p99_ms']:.0f} ms ({f['realtime_events']:,.0f} events, "
            f"{f['realtime_lost']:.0f} never seen)",
            f"the legacy job: every 60 s, {f['legacy_job_s']:.2f} s a run",
            below(f["realtime_p99_ms"], 1000.0) and f["realtime_lost"] == 0,
        ),
        Line(
            "Accurate historical metrics",
            "0 unexplained mismatches",
            f"{f['compare_unexplained']:,.0f} unexplained; {f['compare_mismatches']:,.0f} of "
            f"{f['compare_values']:,.0f} values differ ({reasons})",
            f"PostgreSQL's aggregation of all {f['compare_users']:,.0f} users",
            f["compare_unexplained"] == 0,
        ),
        Line(
            "Cache hit rate > 95%",
            "> 95% of reaction lookups",
            f"{f['reactions_hit_rate']:.1%} of images looked up; {f['reactions_page_hit_rate']:.1%} of pages "
            "without a miss",
            "no cache: every page a PostgreSQL query",
            f["reactions_hit_rate"] > 0.95,
        ),
        Line(
            "Reaction query time < 10ms (p99)",
            "p99 < 10 ms, reactions pages, hits and misses",
            f"{_lat(f, 'reactions')} ({f['reactions_pages']:,.0f} pages of {f['images_per_page']:.0f} images; "
            f"misses p99 {f['reactions_miss_p99_ms']:.1f} ms)",
            f"PostgreSQL p50 {f['legacy_reactions_p50_ms']:.1f} / p99 {f['legacy_reactions_p99_ms']:.1f} ms",
            below(f["reactions_p99_ms"], 10.0),
        ),
        Line(
            "Zero data loss during migration",
            "0 legacy reactions missing or different",
            f"{f['verify_missing']:,.0f} of {f['verify_legacy_rows']:,.0f} rows missing; "
            f"{f['verify_users_differing']:,.0f} users and {f['verify_images_differing']:,.0f} images differ; "
            f"{f['compare_reaction_mismatches']:,.0f} of {f['compare_reaction_pairs']:,.0f} pairs differ",
            f"{f['legacy_rows']:,.0f} legacy ImageReaction rows",
            lost == 0,
        ),
        Line(
            "80% reduction in storage",
            ">= 80% below the legacy table and indexes",
            f"{store.total / MB:.1f} MB ({less(store.reduction)}): ClickHouse {store.clickhouse / MB:.1f} MB "
            f"(every table; the log {store.log / MB:.1f} MB), Redis {store.redis / MB:.1f} MB",
            f"{store.legacy_same / MB:.1f} MB: ImageReaction with its indexes ({f['legacy_flagged_rows']:,.0f} rows)",
            at_least(store.reduction, 0.8),
        ),
        Line(
            "80% reduction in reaction-related database load",
            ">= 80% fewer database queries",
            f"{r_after:,.0f} queries ({less(reduction(r_before, r_after))}): ClickHouse on misses, "
            f"{f['client_sql_statements']:,.0f} PostgreSQL",
            f"{r_before:,.0f} PostgreSQL queries, one a page",
            at_least(reduction(r_before, r_after), 0.8),
        ),
    ]


def table(shapes: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the one table: a measured column per shape, the baseline of the first shape, and the
    verdict of each shape."""
    cards = {shape: lines(f) for shape, f in shapes.items()}
    names = list(cards)
    headers = ["seed line", "target", *(f"measured ({s})" for s in names), "baseline (same run)", "verdict"]
    rows = []
    for i, first in enumerate(cards[names[0]]):
        each = [cards[s][i] for s in names]
        verdict = " / ".join(line.verdict for line in each)
        rows.append([first.seed, first.target, *(line.measured for line in each), first.baseline, verdict])
    return headers, rows
