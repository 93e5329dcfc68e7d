"""A task that does nothing, run by the project's own worker: the ingest benchmark sets its rate against plain
Celery's ceiling (``bench/plain.py``) to show what the project's worker adds per message.

It lives with the service, not with the benchmarks: it must run exactly as the service's tasks do, registered by
the project's decorator (its task events sampled as the event tasks' are) and routed to the events queue (whose
consumer accepts only the tasks routed there).
"""

from __future__ import annotations

from typing import Any

from app.core import constants as c
from tasks.base import project_task


@project_task(c.BENCH_NOOP, sampled_events=True)
def bench_noop(self: Any, **kwargs: Any) -> None:
    return None
