"""``reconcile_caches``: cached hashes of recently changed users and a random sample of recently read ones are
compared with ClickHouse and repaired; the drift ratio is logged and counted.

A hash behind ClickHouse is not drift while the write path is still bringing it up to date: the flusher marks a
user for the refresher just after its insert, and the refresher writes the hash within a second. So a mismatch is
looked at again after ``RECONCILE_SETTLE_S``: a user marked for the refresher then, or whose hash matches by then,
was in flight; only a hash still wrong and unmarked is drift, repaired and counted. Without this second look, a
reconciliation that met an event between its insert and the refresher's write reported drift on a healthy stack.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from app.caches import metrics_cache
from app.core import constants as c
from app.core.metrics import UserMetrics
from app.derived.job_state import JobReport, load_state, now, save_state
from app.derived.metrics_from_log import compute_user_metrics
from app.stores import counters
from app.stores.redis_store import server_time_us
from app.stores.runtime import Runtime

log = logging.getLogger(__name__)

# Users whose numbers moved since: a range read of the changelog (it holds no Engagement rows).
_CHANGED_USERS_SQL = """
SELECT DISTINCT arrayJoin([userId, ownerId]) AS u FROM eventArrivals
WHERE insertedAt > {since:DateTime64(3, 'UTC')}
"""


def _comparable(m: UserMetrics) -> dict[str, str]:
    data = m.to_hash()
    data.pop("rank", None)
    return data


Mismatches = dict[int, tuple[UserMetrics, UserMetrics]]  # user: (cached, ClickHouse's)


def _mismatched(rt: Runtime, users: Iterable[int]) -> tuple[int, int, Mismatches]:
    """The snapshot version, how many of ``users`` have a cached hash, and those whose hash differs from
    ClickHouse's numbers."""
    version = server_time_us(rt.redis)  # before the queries: a hash written since is newer and stays
    cached = {u: m for u, m in metrics_cache.read(rt.redis, list(users)).items() if m is not None}
    if not cached:
        return version, 0, {}
    fresh = compute_user_metrics(rt.clickhouse, list(cached), weights=rt.weights, window=rt.window)
    wrong = {u: (m, fresh[u]) for u, m in cached.items() if _comparable(m) != _comparable(fresh[u])}
    return version, len(cached), wrong


def _unmarked(rt: Runtime, users: Iterable[int]) -> list[int]:
    """``users`` that are not marked for the refresher (a marked one gets its hash rewritten within a second)."""
    ids = list(users)
    scores = rt.redis.zmscore(c.METRICS_DIRTY_KEY, [str(u) for u in ids]) if ids else []
    return [u for u, score in zip(ids, scores, strict=True) if score is None]


def reconcile_caches(rt: Runtime, sample: int | None = None, rnd: random.Random | None = None) -> JobReport:
    started = time.perf_counter()
    r, ch = rt.redis, rt.clickhouse
    state = load_state(r, "reconcile")
    now_at = now(rt)
    since = datetime.fromisoformat(state["now"]) - timedelta(seconds=10) if state else now_at - timedelta(hours=1)
    changed = {int(u) for (u,) in ch.rows(_CHANGED_USERS_SQL, {"since": since}) if int(u) != 0}
    pool = [int(str(u)) for u in r.zrange(c.RECENT_READS_KEY, 0, -1)]
    size = rt.settings.reconcile_sample if sample is None else sample
    picked = set((rnd or random.SystemRandom()).sample(pool, min(size, len(pool))))
    candidates = sorted(changed | picked)
    checked = repaired = 0
    for i in range(0, len(candidates), 1000):
        version, compared, wrong = _mismatched(rt, candidates[i : i + 1000])
        checked += compared
        if wrong:
            time.sleep(c.RECONCILE_SETTLE_S)  # the write path's own second, for what it is still bringing up to date
            version, _, wrong = _mismatched(rt, _unmarked(rt, wrong))
        if wrong:
            for u in list(wrong)[:5]:  # a few examples; the counts tell the rest
                log.warning(
                    "cache drift for user %s: cached %s, ClickHouse %s",
                    u,
                    _comparable(wrong[u][0]),
                    _comparable(wrong[u][1]),
                )
            fixes = {u: fresh for u, (_, fresh) in wrong.items()}
            repaired += metrics_cache.write(r, version, fixes, rt.settings.stale_copy_ttl_s)
    drift = repaired / checked if checked else 0.0
    save_state(r, "reconcile", {"now": now_at.isoformat()})
    pipe = r.pipeline(transaction=False)
    counters.add(pipe, reconcile_checked_total=checked, reconcile_repaired_total=repaired)
    counters.put(pipe, reconcile_drift_ratio=round(drift, 6))
    pipe.execute()
    return JobReport(
        "reconcile_caches", users=checked, changed=repaired, drift_ratio=drift, seconds=time.perf_counter() - started
    )
