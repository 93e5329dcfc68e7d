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
    clickhouse_complete_source,
    clickhouse_metrics_source,
    clickhouse_reaction_source,
    history_source,
)
from app.read.reactions_service import (
    FILLS,
    CacheFills,
    CompleteReactionSource,
    ReactionSource,
    UserReactionQueryService,
)
from app.stores.runtime import Runtime

__all__ = [
    "HistorySource",
    "MetricsSource",
    "complete_reaction_source",
    "history_source",
    "metrics_source",
    "reaction_source",
    "reactions_reader",
]


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


def complete_reaction_source(rt: Runtime) -> CompleteReactionSource | None:
    """A user's complete set of reactions, where reactions are read from ClickHouse and complete sets are on
    (``REACTIONS_COMPLETE_MAX_IMAGES`` > 0); None otherwise (the legacy sources fill page by page)."""
    return clickhouse_complete_source(rt) if rt.settings.reactions_read_source == "clickhouse" else None


def reactions_reader(rt: Runtime, fills: CacheFills | None = FILLS) -> UserReactionQueryService:
    """The reactions query service on the configured sources, complete sets included where they are on."""
    return UserReactionQueryService(rt.redis, reaction_source(rt), fills, complete_reaction_source(rt))
