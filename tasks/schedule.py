"""The beat schedule, as data: task name → interval (from settings) and queue. Nothing else defines it."""

from __future__ import annotations

from typing import Any

from app import constants as c
from app.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        c.CHECK_EVENT_BUFFER: {
            "task": c.CHECK_EVENT_BUFFER,
            "schedule": settings.buffer_check_interval_s,
            "options": {"queue": c.MAINTENANCE_QUEUE, "expires": settings.buffer_check_interval_s},
        },
    }
