"""The beat schedule, as data: task name → interval (from settings) and queue. Nothing else defines it."""

from __future__ import annotations

from typing import Any

from app.core import constants as c
from app.core.settings import Settings


def intervals(settings: Settings) -> dict[str, float]:
    """Every beat job and its interval in seconds (settings: ``*_INTERVAL_S``)."""
    return {
        c.CHECK_EVENT_BUFFER: settings.buffer_check_interval_s,
        c.RECOMPUTE_ENGAGEMENT: settings.engagement_interval_s,
        c.RECOMPUTE_RANKS: settings.ranks_interval_s,
        c.REFRESH_EXPIRING_CACHES: settings.refresh_interval_s,
        c.RECONCILE_CACHES: settings.reconcile_interval_s,
        c.SNAPSHOT_USER_METRICS: settings.snapshot_interval_s,
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    # A tick not started within its interval is dropped (expires): the next one does the same work.
    return {
        name: {"task": name, "schedule": every, "options": {"queue": c.MAINTENANCE_QUEUE, "expires": every}}
        for name, every in intervals(settings).items()
    }
