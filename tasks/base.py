"""The project's one task decorator: stable names, JSON, time limits, bounded retries, dead letters, logging."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from celery import Task

from app import deadletters, runtime
from app.errors import TRANSIENT_EXCEPTIONS, PermanentError
from app.settings import load_settings
from tasks.celery_app import celery_app

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

_settings = load_settings()


class ProjectTask(Task[Any, Any]):
    """Base class: a task that fails for good is dead-lettered with its reason and payload, never dropped."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        transient = isinstance(exc, TRANSIENT_EXCEPTIONS)
        reason = f"gave up after {self.request.retries} retries: {exc}" if transient else str(exc)
        try:
            deadletters.record(
                runtime.get().redis,
                task=self.name,
                reason=reason,
                error=type(exc).__name__,
                task_id=task_id,
                kwargs={"args": list(args or ()), "kwargs": kwargs} if args else kwargs,
            )
        except Exception:
            log.exception("could not dead-letter task %s[%s]; payload: %r", self.name, task_id, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().__call__(*args, **kwargs)
        finally:
            log.debug("%s[%s] took %.1f ms", self.name, self.request.id, (time.perf_counter() - started) * 1000)


def project_task(
    name: str,
    *,
    time_limit_s: int = 60,
    ignore_result: bool = True,
    max_retries: int | None = None,
) -> Callable[[Callable[P, R]], Any]:
    """Register a task under an explicit, stable ``name`` (its queue comes from ``task_routes``).

    Transient errors (a store unreachable) retry with exponential backoff and full jitter up to ``max_retries``,
    then dead-letter; permanent errors dead-letter at once.
    """

    def wrap(fn: Callable[P, R]) -> Any:
        register: Any = celery_app.task
        return register(
            fn,
            name=name,
            base=ProjectTask,
            bind=True,
            ignore_result=ignore_result,
            acks_late=True,
            reject_on_worker_lost=True,
            time_limit=time_limit_s,
            soft_time_limit=max(1, time_limit_s - 5),
            autoretry_for=TRANSIENT_EXCEPTIONS,
            dont_autoretry_for=(PermanentError,),
            retry_backoff=True,
            retry_backoff_max=_settings.retry_backoff_max_s,
            retry_jitter=True,
            max_retries=_settings.task_max_retries if max_retries is None else max_retries,
        )

    return wrap
