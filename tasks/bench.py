"""A task that does nothing: the ceiling of this machine and broker, the baseline of the ingest benchmark."""

from __future__ import annotations

from typing import Any

from app.core import constants as c
from tasks.base import project_task
from tasks.celery_app import settings


@project_task(c.BENCH_NOOP, send_events=settings.event_task_events)
def bench_noop(self: Any, **kwargs: Any) -> None:
    return None
