"""``reconcile_caches``: cached hashes of recently changed users and a random sample of recently read ones are
compared with ClickHouse and repaired; the drift ratio is logged and counted."""

from __future__ import annotations

import logging
import random
import time
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
        chunk = candidates[i : i + 1000]
        version = server_time_us(r)
        cached = {u: m for u, m in metrics_cache.read(r, chunk).items() if m is not None}
        if not cached:
            continue
        fresh = compute_user_metrics(ch, list(cached), weights=rt.weights, window=rt.window)
        wrong = {u: fresh[u] for u, m in cached.items() if _comparable(m) != _comparable(fresh[u])}
        checked += len(cached)
        if wrong:
            for u in list(wrong)[:5]:  # a few examples; the counts tell the rest
                log.warning(
                    "cache drift for user %s: cached %s, ClickHouse %s",
                    u,
                    _comparable(cached[u]),
                    _comparable(wrong[u]),
                )
            repaired += metrics_cache.write(r, version, wrong, rt.settings.stale_copy_ttl_s)
    drift = repaired / checked if checked else 0.0
    save_state(r, "reconcile", {"now": now_at.isoformat()})
    pipe = r.pipeline(transaction=False)
    counters.add(pipe, reconcile_checked_total=checked, reconcile_repaired_total=repaired)
    counters.put(pipe, reconcile_drift_ratio=round(drift, 6))
    pipe.execute()
    return JobReport(
        "reconcile_caches", users=checked, changed=repaired, drift_ratio=drift, seconds=time.perf_counter() - started
    )
