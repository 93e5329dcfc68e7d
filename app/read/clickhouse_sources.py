"""ClickHouse as the source of reads: in this process, or, when another process owns the embedded engine (embedded
mode while the stack runs), through a read task on the ``reads`` queue that the owning worker answers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from app.caches.reactions_cache import BitUpdate, ReactionSet
from app.core import constants as c
from app.core.metrics import UserMetrics
from app.read.history import HistoryPoint, metric_history
from app.read.metrics_miss import user_metrics
from app.read.reactions_miss import complete_reactions, current_reactions
from app.read.reactions_service import (
    CompleteReactionSource,
    ReactionSource,
    states_from_json,
)
from app.stores import clickhouse
from app.stores.broker import through_worker
from app.stores.runtime import Runtime


class MetricsSource(Protocol):
    def __call__(self, user_ids: Sequence[int], as_of: datetime | None = None) -> dict[int, UserMetrics]: ...


class HistorySource(Protocol):
    def __call__(
        self, user_id: int, metric: str, start: datetime, end: datetime, interval: str
    ) -> list[HistoryPoint]: ...


def clickhouse_metrics_source(rt: Runtime) -> MetricsSource:
    if clickhouse.owner_is_elsewhere(rt.settings):

        def via_worker(user_ids: Sequence[int], as_of: datetime | None = None) -> dict[int, UserMetrics]:
            data = through_worker(
                rt, c.QUERY_USER_METRICS, user_ids=list(user_ids), as_of=as_of.isoformat() if as_of else None
            )
            return {int(uid): UserMetrics.from_hash(fields) for uid, fields in data.items()}

        return via_worker

    def direct(user_ids: Sequence[int], as_of: datetime | None = None) -> dict[int, UserMetrics]:
        return user_metrics(rt, user_ids, as_of)

    return direct


def clickhouse_reaction_source(rt: Runtime) -> ReactionSource:
    if clickhouse.owner_is_elsewhere(rt.settings):

        def via_worker(user_id: int, image_ids: Sequence[int]) -> dict[int, list[BitUpdate]]:
            return states_from_json(through_worker(rt, c.QUERY_REACTIONS, user_id=user_id, image_ids=list(image_ids)))

        return via_worker
    return lambda user_id, image_ids: current_reactions(rt, user_id, image_ids)


def clickhouse_complete_source(rt: Runtime) -> CompleteReactionSource | None:
    """Every image a user has a reaction event on, up to ``REACTIONS_COMPLETE_MAX_IMAGES`` (None: complete sets
    off)."""
    cap = rt.settings.reactions_complete_max_images
    if cap <= 0:
        return None
    if clickhouse.owner_is_elsewhere(rt.settings):

        def via_worker(user_id: int) -> ReactionSet | None:
            data = through_worker(rt, c.QUERY_ALL_REACTIONS, user_id=user_id, max_images=cap)
            return None if data is None else ReactionSet.from_json(data)

        return via_worker
    return lambda user_id: complete_reactions(rt, user_id, cap)


def history_source(rt: Runtime) -> HistorySource:
    if clickhouse.owner_is_elsewhere(rt.settings):

        def via_worker(user_id: int, metric: str, start: datetime, end: datetime, interval: str) -> list[HistoryPoint]:
            data = through_worker(
                rt,
                c.QUERY_HISTORY,
                user_id=user_id,
                metric=metric,
                start=start.isoformat(),
                end=end.isoformat(),
                interval=interval,
            )
            return [HistoryPoint.from_json(p) for p in data]

        return via_worker

    def direct(user_id: int, metric: str, start: datetime, end: datetime, interval: str) -> list[HistoryPoint]:
        return metric_history(rt.clickhouse, user_id, metric, start, end, interval)

    return direct
