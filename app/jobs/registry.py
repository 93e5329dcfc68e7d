"""Every beat job by name: what it runs and which setting holds its interval; and running one now.

``tasks/maintenance.py`` wraps each in a Celery task and ``tasks/schedule.py`` builds the beat schedule from this
table; ``python -m app jobs run NAME`` runs one at once (``run_now``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.core import constants as c
from app.core.errors import ValidationError
from app.core.settings import Settings
from app.derived.job_state import JobReport
from app.jobs import buffer_check, derived_tables, engagement, ranks, reconcile, rewarm
from app.jobs.run import run_job
from app.stores.runtime import Runtime

# name -> (the job, the setting naming its interval in seconds). ``check_event_buffer`` only measures: it takes
# no lock and no slot, and is not here.
JOBS: dict[str, tuple[Callable[[Runtime], JobReport], str]] = {
    c.RECOMPUTE_ENGAGEMENT: (engagement.recompute_engagement, "engagement_interval_s"),
    c.RECOMPUTE_RANKS: (ranks.recompute_ranks, "ranks_interval_s"),
    c.REFRESH_EXPIRING_CACHES: (rewarm.refresh_expiring_caches, "refresh_interval_s"),
    c.RECONCILE_CACHES: (reconcile.reconcile_caches, "reconcile_interval_s"),
    c.SNAPSHOT_USER_METRICS: (derived_tables.snapshot_user_metrics, "snapshot_interval_s"),
}


def intervals(settings: Settings) -> dict[str, float]:
    """Every beat job and its interval in seconds (settings: ``*_INTERVAL_S``)."""
    return {
        c.CHECK_EVENT_BUFFER: settings.buffer_check_interval_s,
        **{name: float(getattr(settings, attr)) for name, (_, attr) in JOBS.items()},
    }


def run_now(rt: Runtime, name: str) -> dict[str, Any]:
    """Run the beat job ``name`` now, under its usual lock (never twice at once) but outside its interval slot."""
    if name == c.CHECK_EVENT_BUFFER:
        return buffer_check.check_event_buffer(rt)
    if name not in JOBS:
        raise ValidationError(f"unknown job {name!r}: one of {', '.join(c.JOBS)}")
    job, attr = JOBS[name]
    return run_job(rt, name, float(getattr(rt.settings, attr)), job, slot=False)
