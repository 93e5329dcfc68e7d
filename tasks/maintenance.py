"""Beat jobs on the maintenance queue: each runs once per tick and never twice at once (``app.jobs.run``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.core import constants as c
from app.derived.job_state import JobReport
from app.jobs import buffer_check, derived_tables, engagement, ranks, reconcile, rewarm
from app.jobs.registry import run_now
from app.jobs.run import run_job
from app.stores import runtime
from app.stores.runtime import Runtime
from tasks.base import project_task
from tasks.celery_app import settings

_limit = settings.job_time_limit_s


def _run(name: str, interval_s: float, job: Callable[[Runtime], JobReport]) -> dict[str, Any]:
    return run_job(runtime.get(), name, interval_s, job)


@project_task(c.RUN_JOB_NOW, ignore_result=False, time_limit_s=_limit, max_retries=0)
def run_job_now(self: Any, name: str) -> dict[str, Any]:
    """Run one beat job now for a process that cannot reach ClickHouse itself (embedded mode, the stack running)."""
    return run_now(runtime.get(), str(name))


@project_task(c.RECOMPUTE_ENGAGEMENT, time_limit_s=_limit, max_retries=0)
def recompute_engagement(self: Any, full: bool | None = None) -> dict[str, Any]:
    """Engagement scores of every user with activity in the window (incremental when safe)."""
    return _run(
        c.RECOMPUTE_ENGAGEMENT, settings.engagement_interval_s, lambda rt: engagement.recompute_engagement(rt, full)
    )


@project_task(c.RECOMPUTE_RANKS, time_limit_s=_limit, max_retries=0)
def recompute_ranks(self: Any) -> dict[str, Any]:
    """Rebuild ``leaderboard:engagement`` off to the side, swap it in, update ``rank`` in cached hashes."""
    return _run(c.RECOMPUTE_RANKS, settings.ranks_interval_s, ranks.recompute_ranks)


@project_task(c.REFRESH_EXPIRING_CACHES, time_limit_s=_limit, max_retries=0)
def refresh_expiring_caches(self: Any) -> dict[str, Any]:
    """Re-warm recently read users' caches shortly before they expire (bounded per run)."""
    return _run(c.REFRESH_EXPIRING_CACHES, settings.refresh_interval_s, rewarm.refresh_expiring_caches)


@project_task(c.RECONCILE_CACHES, time_limit_s=_limit, max_retries=0)
def reconcile_caches(self: Any) -> dict[str, Any]:
    """Compare cached metrics with ClickHouse (recently changed users and a sample), repair, report drift."""
    return _run(c.RECONCILE_CACHES, settings.reconcile_interval_s, reconcile.reconcile_caches)


@project_task(c.CHECK_EVENT_BUFFER, time_limit_s=30, max_retries=0)
def check_event_buffer(self: Any) -> dict[str, Any]:
    """Measure the write path's lag (buffer length, pending entries, oldest pending age) and dead letters."""
    return buffer_check.check_event_buffer(runtime.get())


@project_task(c.SNAPSHOT_USER_METRICS, time_limit_s=_limit, max_retries=0)
def snapshot_user_metrics(self: Any, full: bool | None = None) -> dict[str, Any]:
    """Recompute the metrics snapshot of users changed since the last run (all users on a full run)."""
    return _run(
        c.SNAPSHOT_USER_METRICS, settings.snapshot_interval_s, lambda rt: derived_tables.snapshot_user_metrics(rt, full)
    )
