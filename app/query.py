"""Read side: user metrics from Redis first, ClickHouse behind every miss (DESIGN.md section 6).

Where ClickHouse lives in another process (embedded mode: the worker owns chdb), misses are resolved by a read
task on the ``reads`` queue; callers do not see the difference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from app import metrics_cache
from app.metrics import UserMetrics, compute_user_metrics
from app.redis_store import server_time_us
from app.runtime import Runtime

log = logging.getLogger(__name__)


class MetricsSource(Protocol):
    def __call__(self, user_ids: Sequence[int], as_of: datetime | None = None) -> dict[int, UserMetrics]: ...


def direct_source(rt: Runtime) -> MetricsSource:
    """Compute in this process (server mode, or the process that owns chdb)."""

    def compute(user_ids: Sequence[int], as_of: datetime | None = None) -> dict[int, UserMetrics]:
        return compute_user_metrics(rt.clickhouse, user_ids, weights=rt.weights, window=rt.window, as_of=as_of)

    return compute


class UserMetricsQueryService:
    def __init__(self, rt: Runtime, source: MetricsSource | None = None) -> None:
        self.rt = rt
        self.source: MetricsSource = source or direct_source(rt)

    def get_user_metrics(self, user_ids: Iterable[int]) -> dict[int, UserMetrics]:
        """Metrics for many users: one Redis round trip for the hits, one ClickHouse query for the misses."""
        ids = list(dict.fromkeys(int(u) for u in user_ids))
        cached = metrics_cache.read(self.rt.redis, ids)
        misses = [uid for uid, m in cached.items() if m is None]
        found: dict[int, UserMetrics] = {uid: m for uid, m in cached.items() if m is not None}
        if misses:
            version = server_time_us(self.rt.redis)
            computed = self.source(misses)
            metrics_cache.write(self.rt.redis, version, computed)
            found.update(computed)
        return {uid: found[uid] for uid in ids}

    def get_user_follower_count(self, user_id: int) -> int:
        return self.get_user_metrics([user_id])[user_id].follower_count
