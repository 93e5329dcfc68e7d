"""A task that does nothing: the ceiling of this machine and broker, the baseline of the ingest benchmark."""

from __future__ import annotations

from typing import Any

from app import constants as c
from app.settings import load_settings
from tasks.base import project_task


@project_task(c.BENCH_NOOP, send_events=load_settings().event_task_events)
def bench_noop(self: Any, **kwargs: Any) -> None:
    return None
