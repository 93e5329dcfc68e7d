"""A plain Celery application with Celery's defaults and one no-op task: the ceiling of this machine and broker.

Nothing of the project's configuration applies (no task events, no late acks, no routing, no dead-lettering
consumer): this is what Celery itself carries. The broker comes from Celery's own ``CELERY_BROKER_URL`` variable,
set by the benchmark for the worker process it starts.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

plain = Celery("plain")


@plain.task(name="bench_noop")
def bench_noop(**kwargs: Any) -> None:
    """Does nothing: the cost measured is Celery's own per message."""
