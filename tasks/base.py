"""The project's one task decorator: stable names, JSON, time limits, bounded retries, dead letters, logging."""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from celery.worker.request import Request
from celery.worker.strategy import default as default_strategy

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


# Task events of the per-message event tasks: a sampled share of their messages sends them.
#
# A worker that sends task events publishes three per message (received, started, succeeded): for the event tasks
# that is a large share of a worker's throughput. A share of their messages (``EVENT_TASK_EVENTS_SAMPLE``) still
# sends them, so that Flower shows them live with their arguments. The choice is made per message from its task id
# alone: every event of one message is sent or none is, in any worker, on every redelivery. Celery sends a task's
# events from two places, both through the dispatcher the task's strategy is built with: the strategy itself
# (task-received) and the request (task-started, -succeeded, -failed, -retried, -rejected, -revoked). An event
# task's strategy is Celery's own, built with the worker's dispatcher behind ``SampledDispatcher``; whether the
# worker sends task events at all (``TASK_EVENTS``, ``enable_events``/``disable_events``) stays the dispatcher's.


def sampled(task_id: str, share: float) -> bool:
    """Whether the message ``task_id`` is in the ``share`` (0..1) of event-task messages that send task events: the
    CRC-32 of the id's bytes, as a fraction of 2**32, is below ``share``."""
    return zlib.crc32(task_id.encode()) < share * 2**32


class SampledDispatcher:
    """The worker's event dispatcher as an event task sees it: a message's events pass when its id is sampled."""

    def __init__(self, dispatcher: Any, share: float) -> None:
        self.dispatcher = dispatcher
        self.share = share

    @property
    def enabled(self) -> bool:
        return bool(self.dispatcher.enabled)

    def send(self, type: str, **fields: Any) -> Any:  # noqa: A002 - Celery's parameter name
        if sampled(str(fields.get("uuid")), self.share):
            return self.dispatcher.send(type, **fields)
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dispatcher, name)


def _gated(dispatcher: Any) -> Any:
    if dispatcher is None or isinstance(dispatcher, SampledDispatcher):
        return dispatcher
    return SampledDispatcher(dispatcher, settings.event_task_events_share)


class _ConsumerView:
    """The worker's consumer with its event dispatcher behind the sampling gate (what the strategy is built on)."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self.event_dispatcher = _gated(consumer.event_dispatcher)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def sampled_strategy(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Any:
    """An event task's strategy: Celery's default one, on the consumer's dispatcher behind the sampling gate. The
    consumer builds it again (with the new dispatcher) whenever it reconnects."""
    return default_strategy(task, app, _ConsumerView(consumer), **kwargs)


class SampledRequest(Request):
    """An event task's request. When the consumer reconnects it hands the requests it holds the new dispatcher:
    that one goes behind the sampling gate too."""

    @property
    def eventer(self) -> Any:
        return self._eventer

    @eventer.setter
    def eventer(self, eventer: Any) -> None:
        self._eventer = _gated(eventer)


def project_task(
    name: str,
    *,
    time_limit_s: int = 60,
    ignore_result: bool = True,
    max_retries: int | None = None,
    sampled_events: bool = False,
) -> Callable[[Callable[P, R]], Any]:
    """Register a task under an explicit, stable ``name`` (its queue comes from ``task_routes``).

    Transient errors (a store unreachable) retry with exponential backoff and full jitter up to ``max_retries``,
    then dead-letter; permanent errors dead-letter at once. ``sampled_events``: where the worker sends task events,
    this task sends them for the sampled share of its messages only (``EVENT_TASK_EVENTS_SAMPLE``); other tasks
    send them for every message.
    """
    # By name, as Celery's defaults are (a function set on the task class would be bound to the task).
    sampling = {"Strategy": f"{__name__}:sampled_strategy", "Request": f"{__name__}:SampledRequest"}
    sampling = sampling if sampled_events else {}

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
            **sampling,
        )

    return wrap
