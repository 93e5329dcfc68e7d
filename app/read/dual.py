"""Read sources on the legacy side: ``postgres`` (serve the legacy aggregation) and ``dual`` (serve PostgreSQL,
compare with ClickHouse in the background, log and count every discrepancy). Chosen by
``USER_METRICS_READ_SOURCE`` / ``REACTIONS_READ_SOURCE``; callers of the query services do not change.

Also the dual-write helper for the web app: enqueue the new events only once the legacy transaction committed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime
from typing import Any

from app.caches.reactions_cache import ALL_BITS, NO_VERSION, BitUpdate
from app.core.metrics import UserMetrics
from app.legacy.baseline import FIELDS, legacy_reactions, legacy_user_metrics
from app.legacy.db import engine
from app.read.clickhouse_sources import clickhouse_metrics_source, clickhouse_reaction_source
from app.read.reactions_service import ReactionSource
from app.stores import counters
from app.stores.runtime import Runtime

log = logging.getLogger(__name__)
_background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dual-compare")
_pending: set[Future[Any]] = set()
_pending_lock = threading.Lock()


def _submit(fn: Callable[..., None], *args: Any) -> None:
    """Run a comparison in the background; the read that triggered it does not wait."""
    future = _background.submit(fn, *args)
    with _pending_lock:
        _pending.add(future)
    future.add_done_callback(lambda f: _forget(f))


def _forget(future: Future[Any]) -> None:
    with _pending_lock:
        _pending.discard(future)


def _to_metrics(m: dict[str, int]) -> UserMetrics:
    return UserMetrics(
        follower_count=m["followerCount"],
        following_count=m["followingCount"],
        model_count=m["modelCount"],
        post_count=m["postCount"],
        image_count=m["imageCount"],
        upload_count=m["uploadCount"],
        reaction_count=m["reactionCount"],
    )


def postgres_metrics_source(rt: Runtime) -> Callable[..., dict[int, UserMetrics]]:
    def legacy(user_ids: Sequence[int], as_of: datetime | None = None) -> dict[int, UserMetrics]:
        return {u: _to_metrics(m) for u, m in legacy_user_metrics(engine(rt.settings), user_ids).items()}

    return legacy


def _count_discrepancies(rt: Runtime, n: int) -> None:
    counters.add(rt.redis, dual_discrepancies_total=n)


def dual_metrics_source(rt: Runtime) -> Callable[..., dict[int, UserMetrics]]:
    serve = postgres_metrics_source(rt)
    shadow = clickhouse_metrics_source(rt)

    def check(served: dict[int, UserMetrics]) -> None:
        try:
            fresh = shadow(list(served))
            wrong = 0
            for u, m in served.items():
                legacy, new = m.to_json(), fresh[u].to_json()
                diff = {f: (legacy[f], new[f]) for f in FIELDS if legacy[f] != new[f]}
                if diff:
                    wrong += 1
                    log.warning("dual read: user %s differs (postgres, clickhouse): %s", u, diff)
            if wrong:
                _count_discrepancies(rt, wrong)
        except Exception:
            log.exception("dual read: the ClickHouse comparison failed")

    def dual(user_ids: Sequence[int], as_of: datetime | None = None) -> dict[int, UserMetrics]:
        served = serve(user_ids)
        _submit(check, dict(served))
        return served

    return dual


def _bits(image: int, flags: int) -> list[BitUpdate]:
    return [BitUpdate(image, b, bool(flags & b), NO_VERSION) for b in ALL_BITS]


def postgres_reaction_source(rt: Runtime) -> ReactionSource:
    def legacy(user_id: int, image_ids: Sequence[int]) -> dict[int, list[BitUpdate]]:
        return {i: _bits(i, f) for i, f in legacy_reactions(engine(rt.settings), user_id, image_ids).items()}

    return legacy


def dual_reaction_source(rt: Runtime) -> ReactionSource:
    serve = postgres_reaction_source(rt)
    shadow = clickhouse_reaction_source(rt)

    def check(user_id: int, served: dict[int, int]) -> None:
        try:
            fresh = {i: sum(b.bit for b in bits if b.on) for i, bits in shadow(user_id, list(served)).items()}
            diff = {i: (f, fresh[i]) for i, f in served.items() if fresh[i] != f}
            if diff:
                log.warning("dual read: reactions of user %s differ (postgres, clickhouse): %s", user_id, diff)
                _count_discrepancies(rt, len(diff))
        except Exception:
            log.exception("dual read: the ClickHouse comparison failed")

    def dual(user_id: int, image_ids: Sequence[int]) -> dict[int, list[BitUpdate]]:
        served = serve(user_id, image_ids)
        _submit(check, user_id, {i: sum(b.bit for b in bits if b.on) for i, bits in served.items()})
        return served

    return dual


def wait_for_comparisons() -> None:
    """Block until the background comparisons submitted so far are done (tests, shutdown)."""
    with _pending_lock:
        pending = list(_pending)
    wait(pending)
