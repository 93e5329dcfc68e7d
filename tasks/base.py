"""The project's one task decorator: stable names, JSON, time limits, bounded retries, dead letters, logging."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from app.core.errors import PermanentError
from app.stores import runtime
from app.stores.errors import TRANSIENT_EXCEPTIONS
from app.write import deadletters
from tasks.celery_app import celery_app, settings

log = logging.getLogger(__name__)
# Pause before a message goes back to its queue because a store is down (no busy loop on it meanwhile).
REQUEUE_PAUSE_S = 1.0
_DEAD_LETTERED = "dead_lettered"
P = ParamSpec("P")
R = TypeVar("R")


class ProjectTask(Task[Any, Any]):
    """Base class: a task that fails for good is dead-lettered with its reason and payload, never dropped.

    Two ways Celery could otherwise lose a message are closed here. A retry whose new message cannot be
    published (the broker is down) makes Celery reject the original *without* requeueing it; and a final failure
    is acknowledged even when its dead letter could not be written (Redis is down). In both cases the message is
    requeued instead, after a short pause, so that it is redelivered once the stores are back.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().__call__(*args, **kwargs)
        except (Retry, Ignore):
            raise
        except Reject as exc:
            if getattr(exc, "requeue", False):
                raise
            log.error("%s[%s]: could not publish its retry (%s); requeueing it", self.name, self.request.id, exc)
            time.sleep(REQUEUE_PAUSE_S)
            raise Reject(getattr(exc, "reason", exc), requeue=True) from exc
        except Exception as exc:
            if not self._dead_letter(exc, str(self.request.id), args, kwargs):
                time.sleep(REQUEUE_PAUSE_S)
                raise Reject(f"could not dead-letter: {exc}", requeue=True) from exc
            setattr(self.request, _DEAD_LETTERED, True)  # noqa: B010 - Celery's request context is open-ended
            raise
        finally:
            log.debug("%s[%s] took %.1f ms", self.name, self.request.id, (time.perf_counter() - started) * 1000)

    def _dead_letter(self, exc: BaseException, task_id: str, args: Any, kwargs: Any) -> bool:
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
            log.exception("could not dead-letter task %s[%s]; payload: %.2000r", self.name, task_id, kwargs)
            return False
        return True

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Failures outside the task body (a hard time limit) did not pass through ``__call__``.
        if not getattr(self.request, _DEAD_LETTERED, False):
            self._dead_letter(exc, task_id, args, kwargs)


def project_task(
    name: str,
    *,
    time_limit_s: int = 60,
    ignore_result: bool = True,
    max_retries: int | None = None,
    send_events: bool = True,
) -> Callable[[Callable[P, R]], Any]:
    """Register a task under an explicit, stable ``name`` (its queue comes from ``task_routes``).

    Transient errors (a store unreachable) retry with exponential backoff and full jitter up to ``max_retries``,
    then dead-letter; permanent errors dead-letter at once. ``send_events=False``: no task events for this task
    even where the worker sends them (``EVENT_TASK_EVENTS``).
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
            retry_backoff_max=settings.retry_backoff_max_s,
            retry_jitter=True,
            max_retries=settings.task_max_retries if max_retries is None else max_retries,
            send_events=send_events,
        )

    return wrap
