"""The beat schedule, as data: task name → interval (from settings) and queue. Nothing else defines it."""

from __future__ import annotations

from typing import Any

from app.core import constants as c
from app.core.settings import Settings
from app.jobs.registry import intervals


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    # A tick not started within its interval is dropped (expires): the next one does the same work.
    return {
        name: {"task": name, "schedule": every, "options": {"queue": c.MAINTENANCE_QUEUE, "expires": every}}
        for name, every in intervals(settings).items()
    }
