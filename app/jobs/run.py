"""How a beat job runs: once per interval tick across every beat and worker, never twice at once, then reported.

Two beats publishing the same tick (or a retry of the same tick) find the tick's slot taken (``job:slot:*``, a
``SET NX`` with a TTL of two intervals); a run overlapping a slow previous one finds the job's lock held. Either is
skipped and counted. The tick is numbered on Redis's clock, one for every process: workers whose clocks disagree
would otherwise number the same interval differently and both run it. What a run did is logged and kept in the
service counters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from app.core import constants as c
from app.core import failpoints
from app.derived.job_state import JobReport
from app.stores import counters
from app.stores.locks import redis_lock
from app.stores.redis_store import server_time_us
from app.stores.runtime import Runtime

log = logging.getLogger(__name__)


def run_job(
    rt: Runtime, name: str, interval_s: float, job: Callable[[Runtime], JobReport], slot: bool = True
) -> dict[str, Any]:
    """Run ``job`` once per interval tick (``slot``) and never twice at once (a lock); returns its report."""
    r = rt.redis
    if slot:
        tick = int(server_time_us(r) / 1e6 // interval_s)
        if not r.set(c.JOB_SLOT_KEY.format(job=name, slot=tick), "1", nx=True, ex=max(1, int(interval_s * 2))):
            log.info("%s: this interval's run already happened or is happening; skipped", name)
            counters.add(r, **{f"job_{name}_skipped_total": 1})
            return {"skipped": "slot"}
    with redis_lock(r, f"job:{name}", timeout_s=rt.settings.job_time_limit_s, wait_s=0) as held:
        if not held:
            log.info("%s already running elsewhere; skipped", name)
            counters.add(r, **{f"job_{name}_skipped_total": 1})
            return {"skipped": "lock"}
        failpoints.hit(failpoints.JOB_RUNNING)
        report = job(rt)
    log.info(
        "%s%s: %d users, %d changed, %d cached hashes updated, drift %.4f, %.2f s",
        name,
        f" ({report.mode})" if report.mode else "",
        report.users,
        report.changed,
        report.cached_updated,
        report.drift_ratio,
        report.seconds,
    )
    pipe = r.pipeline(transaction=False)
    counters.add(pipe, **{f"job_{name}_runs_total": 1})
    counters.put(
        pipe, **{f"job_{name}_seconds": round(report.seconds, 4), f"job_{name}_last_run": round(time.time(), 3)}
    )
    pipe.execute()
    return report.to_json()
