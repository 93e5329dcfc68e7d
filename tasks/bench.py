"""Tasks the benchmarks run on the project's own worker.

A task that does nothing: the ingest benchmark sets its rate against plain Celery's ceiling (``bench/plain.py``) to
show what the project's worker adds per message. It lives with the service, not with the benchmarks: it must run
exactly as the service's tasks do, registered by the project's decorator (its task events sampled as the event
tasks' are) and routed to the events queue (whose consumer accepts only the tasks routed there).

The engine's insert counters: in the embedded shape only the worker can read its in-process engine, so the ingest
benchmark asks it (the ``reads`` queue) for the rows its inserts wrote.
"""

from __future__ import annotations

from typing import Any

from app.core import constants as c
from app.stores import runtime
from tasks.base import project_task


@project_task(c.BENCH_NOOP, sampled_events=True)
def bench_noop(self: Any, **kwargs: Any) -> None:
    return None


# The engine's own cumulative counters of what inserts wrote: rows into every table, the tables of materialized views
# included (``InsertedRows``), and insert statements (``InsertQuery``).
ENGINE_COUNTERS = ("InsertedRows", "InsertQuery")


@project_task(c.BENCH_ENGINE_COUNTERS, ignore_result=False, max_retries=0, time_limit_s=30)
def bench_engine_counters(self: Any) -> dict[str, int]:
    """The ClickHouse engine's insert counters as this worker's process sees them (``system.events``): in the
    embedded shape the engine runs inside this process, so they count what this worker wrote and nothing else."""
    names = ", ".join(f"'{n}'" for n in ENGINE_COUNTERS)
    rows = runtime.get().clickhouse.rows(f"SELECT event, value FROM system.events WHERE event IN ({names})")  # noqa: S608 - fixed names
    return {str(name): int(value) for name, value in rows}
