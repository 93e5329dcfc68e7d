"""How a beat job runs: once per interval tick across every beat and worker, never twice at once, then reported.

Two beats publishing the same tick (or a retry of the same tick) find the tick's slot taken (``job:slot:*``, a
``SET NX`` with a TTL of two intervals); a run overlapping a slow previous one finds the job's lock held. Either is
skipped and counted. The tick is numbered on Redis's clock, one for every process: workers whose clocks disagree
would otherwise number the same interval differently and both run it. What a run did is logged; every attempt
(run, failed, skipped) is counted in the service counters, which the worker's exporter publishes per job.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from app.core import constants as c
from app.core import failpoints
from app.derived.job_state import JobReport
from app.stores import counters
from app.stores.errors import REDIS_DOWN
from app.stores.locks import redis_lock
from app.stores.redis_store import RedisClient, server_time_us
from app.stores.runtime import Runtime

log = logging.getLogger(__name__)


def job_lock(name: str) -> str:
    """The name of the lock that keeps two runs of the job ``name`` apart (``redis_lock``)."""
    return f"job:{name}"


def job_lock_key(name: str) -> str:
    """The Redis key of that lock (a supervisor that knows the holder is dead may delete it)."""
    return c.LOCK_KEY.format(name=job_lock(name))


def run_job(
    rt: Runtime, name: str, interval_s: float, job: Callable[[Runtime], JobReport], slot: bool = True
) -> dict[str, Any]:
    """Run ``job`` once per interval tick (``slot``) and never twice at once (a lock); returns its report."""
    r = rt.redis
    if slot:
        tick = int(server_time_us(r) / 1e6 // interval_s)
        if not r.set(c.JOB_SLOT_KEY.format(job=name, slot=tick), "1", nx=True, ex=max(1, int(interval_s * 2))):
            log.info("%s: this interval's run already happened or is happening; skipped", name)
            count_skipped(r, name)
            return {"skipped": "slot"}
    with redis_lock(r, job_lock(name), timeout_s=rt.settings.job_time_limit_s, wait_s=0) as held:
        if not held:
            log.info("%s already running elsewhere; skipped", name)
            count_skipped(r, name)
            return {"skipped": "lock"}
        failpoints.hit(failpoints.JOB_RUNNING)
        with counted(r, name) as done:
            report = job(rt)
            done(report.seconds)
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
    return report.to_json()


# What each attempt of a beat job leaves in the service counters (``stats:counters``), exported per job by the
# worker's exporter (``app/ops/exporter.py``): ``job_{name}_runs_total`` (successful runs),
# ``job_{name}_failures_total`` (runs that raised), ``job_{name}_skipped_total`` (slot taken or lock held),
# ``job_{name}_seconds`` (the last successful run's duration), ``job_{name}_last_success`` and
# ``job_{name}_last_attempt`` (Unix times: the last success's end; the start of the last attempt, any outcome).
JOB_COUNTERS = ("runs_total", "failures_total", "skipped_total", "seconds", "last_success", "last_attempt")


def job_counter(name: str, what: str) -> str:
    """The ``stats:counters`` field of ``what`` (one of ``JOB_COUNTERS``) for the job ``name``."""
    return f"job_{name}_{what}"


def count_skipped(r: RedisClient, name: str) -> None:
    """An attempt that found this tick's slot taken or the job's lock held: beat is alive, the job did not run."""
    pipe = r.pipeline(transaction=False)
    counters.add(pipe, **{job_counter(name, "skipped_total"): 1})
    counters.put(pipe, **{job_counter(name, "last_attempt"): round(time.time(), 3)})
    pipe.execute()


@contextlib.contextmanager
def counted(r: RedisClient, name: str) -> Iterator[Callable[[float], None]]:
    """Count one run of the job ``name``: its start; then, when the block ends, a success (with the duration the
    block passed to the callable it was given, else the block's own) or, when it raises, a failure (the exception
    goes on; a Redis outage only loses the count)."""
    started = time.time()
    with contextlib.suppress(*REDIS_DOWN):
        counters.put(r, **{job_counter(name, "last_attempt"): round(started, 3)})
    reported: list[float] = []
    try:
        yield reported.append
    except Exception:
        with contextlib.suppress(*REDIS_DOWN):
            counters.add(r, **{job_counter(name, "failures_total"): 1})
        raise
    ended = time.time()
    seconds = reported[-1] if reported else ended - started
    pipe = r.pipeline(transaction=False)
    counters.add(pipe, **{job_counter(name, "runs_total"): 1})
    counters.put(
        pipe, **{job_counter(name, "seconds"): round(seconds, 4), job_counter(name, "last_success"): round(ended, 3)}
    )
    pipe.execute()
