"""Where reads come from, chosen by settings, so that callers never change when the source does.

``USER_METRICS_READ_SOURCE`` / ``REACTIONS_READ_SOURCE``: ``clickhouse`` (the caches in front of ClickHouse,
``app.read.clickhouse_sources``), ``postgres`` (the legacy aggregation) or ``dual`` (serve PostgreSQL, compare with
ClickHouse; both in ``app.read.dual``). History always comes from ClickHouse.
"""

from __future__ import annotations

from app.read import dual
from app.read.clickhouse_sources import (
    HistorySource,
    MetricsSource,
    clickhouse_metrics_source,
    clickhouse_reaction_source,
    history_source,
)
from app.read.reactions_service import ReactionSource
from app.stores.runtime import Runtime

__all__ = ["HistorySource", "MetricsSource", "history_source", "metrics_source", "reaction_source"]


def metrics_source(rt: Runtime) -> MetricsSource:
    """The source ``USER_METRICS_READ_SOURCE`` names: ClickHouse, the legacy aggregation, or both (dual)."""
    name = rt.settings.user_metrics_read_source
    if name == "clickhouse":
        return clickhouse_metrics_source(rt)
    return dual.postgres_metrics_source(rt) if name == "postgres" else dual.dual_metrics_source(rt)


def reaction_source(rt: Runtime) -> ReactionSource:
    """The source ``REACTIONS_READ_SOURCE`` names."""
    name = rt.settings.reactions_read_source
    if name == "clickhouse":
        return clickhouse_reaction_source(rt)
    return dual.postgres_reaction_source(rt) if name == "postgres" else dual.dual_reaction_source(rt)
