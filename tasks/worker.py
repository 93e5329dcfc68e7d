"""The worker's parts: its consumer (below), its write path (``WriteStep``) and its process signals.

The consumer: every message on every queue ends as a task run or as a dead letter with its reason.

Celery's consumer builds a task request from a message before any task code runs. Some bodies break that step
(``[1]`` or ``{"follower_id": 1}`` instead of the ``[args, kwargs, embed]`` triple): the error escapes the
consumer, the worker stops with "Unrecoverable error", the message is restored, and every restart dies on it
again. Others (``[null, null, {}]``) are dropped with a warning. This consumer checks each message's shape and
its queue before Celery's strategy sees it and catches anything the strategy still raises, so a bad message
becomes a dead letter (with its raw body, size-capped) and is acknowledged, and the worker carries on.

Queue isolation: each queue accepts only the tasks routed to it (``task_routes``). A producer that may publish to
``events`` therefore cannot run an admin or maintenance task by naming it in a message on ``events``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from celery import bootsteps, signals
from celery.concurrency import prefork
from celery.worker.consumer import Consumer
from kombu.message import Message

from app.core import failpoints
from app.ops import exporter
from app.stores import broker, runtime
from app.write import deadletters
from tasks.writer import PoolChildWriter, WriteThreads, ensure_schema

log = logging.getLogger(__name__)

# How long the consumer waits before handing a message back when it cannot even record the dead letter (Redis
# down): the message is redelivered instead of lost, without spinning on it.
REQUEUE_PAUSE_S = 1.0


def queue_tasks(routes: Mapping[str, Mapping[str, str]]) -> dict[str, frozenset[str]]:
    """Queue name -> the task names routed to it."""
    out: dict[str, set[str]] = {}
    for task, route in routes.items():
        out.setdefault(route["queue"], set()).add(task)
    return {queue: frozenset(tasks) for queue, tasks in out.items()}


def message_queue(message: Message) -> str | None:
    """The queue a message came from: stamped by our Redis transport, else the AMQP routing key."""
    info = message.delivery_info or {}
    queue = info.get("queue") or info.get("routing_key")
    return str(queue) if queue else None


def body_problem(body: Any) -> str | None:
    """Why a decoded protocol-2 body is not ``[args, kwargs, embed]`` (``None`` when it is)."""
    if not isinstance(body, list | tuple) or len(body) != 3:
        return "message body is not the [args, kwargs, embed] triple of a Celery task message"
    args, kwargs, embed = body
    if not isinstance(args, list | tuple):
        return "message body: args is not a list"
    if not isinstance(kwargs, dict):
        return "message body: kwargs is not an object"
    if embed is not None and not isinstance(embed, dict):
        return "message body: the third element (callbacks) is not an object"
    return None


def headers_problem(headers: Any) -> str | None:
    if not isinstance(headers, dict):
        return "message has no headers object"
    if not isinstance(headers.get("task"), str) or not headers.get("task"):
        return "message headers name no task (only Celery protocol 2 messages are accepted)"
    if not isinstance(headers.get("id"), str) or not headers.get("id"):
        return "message headers carry no task id"
    return None


def _raw_body(message: Message) -> Any:
    body = message.body
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return body


class DeadLetteringConsumer(Consumer):
    """Celery's consumer, but a message it cannot run is dead-lettered (with its reason) before it is dropped."""

    _queue_tasks: dict[str, frozenset[str]] | None = None

    def allowed(self) -> dict[str, frozenset[str]]:
        if self._queue_tasks is None:
            self._queue_tasks = queue_tasks(self.app.conf.task_routes or {})
        return self._queue_tasks

    def dead_letter(self, message: Message, reason: str, exc: BaseException | None = None) -> bool:
        """Record ``message`` as a dead letter; False if that failed (the caller must not drop it)."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        try:
            deadletters.record(
                runtime.get().redis,
                task=str(headers.get("task", "")),
                reason=reason,
                error=type(exc).__name__ if exc else "RejectedMessage",
                task_id=str(headers.get("id", "")),
                kwargs={
                    "raw_body": _raw_body(message),
                    "content_type": message.content_type,
                    "queue": message_queue(message),
                },
            )
        except Exception:
            log.exception("could not record a dead letter (%s); the message goes back to its queue", reason)
            return False
        return True

    def refuse(self, message: Message, reason: str, exc: BaseException | None = None) -> None:
        """Dead-letter and acknowledge; if the dead letter cannot be written, requeue instead of dropping."""
        if self.dead_letter(message, reason, exc):
            message.ack()
            return
        time.sleep(REQUEUE_PAUSE_S)
        message.reject(requeue=True)

    def problem(self, message: Message) -> str | None:
        """Why ``message`` must not reach Celery's strategy (``None`` when it may)."""
        problem = headers_problem(message.headers)
        if problem is not None:
            return problem
        task = message.headers["task"]
        if task not in self.app.tasks:
            return f"unknown task {task!r}"
        queue = message_queue(message)
        if task not in self.allowed().get(queue or "", frozenset()):
            return f"task {task!r} is not accepted on queue {queue!r}"
        if message.content_type != "application/json":
            return f"content type {message.content_type!r} is not accepted (JSON only)"
        try:
            body = message.decode()
        except Exception as exc:
            return f"cannot decode message: {exc}"
        return body_problem(body)

    def create_task_handler(self, promise: Any = None) -> Callable[[Message], Any]:
        handler = super().create_task_handler() if promise is None else super().create_task_handler(promise)

        def on_task_received(message: Message) -> Any:
            try:
                problem = self.problem(message)
                if problem is not None:
                    return self.refuse(message, problem)
                return handler(message)
            except Exception as exc:
                log.exception("message could not be turned into a task; dead-lettering it")
                return self.refuse(message, f"invalid task message: {type(exc).__name__}: {exc}", exc)

        return on_task_received

    # Celery's own refusals, now with a dead letter each.
    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self.dead_letter(message, f"cannot decode message: {exc}", exc)
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Message) -> None:
        self.dead_letter(message, "message in an unknown format")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        self.dead_letter(message, f"unknown task: {exc}", exc)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        self.dead_letter(message, f"invalid task message: {exc}", exc)
        super().on_invalid_task(body, message, exc)


# -- The write path and the process signals ---------------------------------------------------------------------
class WriteStep(bootsteps.StartStopStep):
    """Brings the schema up to date, then runs the write path (``tasks.writer``): threads beside a thread pool,
    in the first child of a prefork pool."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        if _is_prefork(parent.pool_cls):
            PoolChildWriter.prepare(parent.hostname)  # before the pool forks: its children inherit it

    def start(self, worker: Any) -> None:
        rt = runtime.get()
        ensure_schema(rt)
        if not _is_prefork(worker.pool_cls):
            # StartStopStep stops (or terminates) ``self.obj`` when the worker shuts down.
            self.obj = WriteThreads(worker.hostname)
            self.obj.start()
        exporter.serve(rt, rt.settings.metrics_port)


def _is_prefork(pool_cls: Any) -> bool:
    return isinstance(pool_cls, type) and issubclass(pool_cls, prefork.TaskPool)


@signals.worker_init.connect
def _restore_unacknowledged(**_: Any) -> None:
    """Embedded mode: this worker owns the ClickHouse data path, so no other worker consumes its broker. Messages
    a killed worker had taken but not acknowledged go back to their queues now, not after the broker's visibility
    timeout (an hour). Server mode: RabbitMQ requeues them when the dead worker's connection drops; with a Redis
    broker they come back after ``BROKER_VISIBILITY_TIMEOUT_S`` (docs/reliability.md)."""
    settings = runtime.get().settings
    if not settings.clickhouse_embedded:
        return
    try:
        restored = broker.restore_unacked(broker.broker_url(settings))
    except Exception:
        log.exception("could not restore unacknowledged broker messages; they return after the visibility timeout")
        return
    if restored:
        log.warning("restored %d unacknowledged broker messages of a worker that died", restored)


@signals.worker_process_init.connect
def _init_process(**_: Any) -> None:
    rt = runtime.get()
    if rt.settings.failpoints:
        failpoints.enable_remote(rt.settings.failpoints.split(","), lambda: runtime.get().redis)
    PoolChildWriter.child_started()


@signals.worker_process_shutdown.connect
def _close_process(**_: Any) -> None:
    PoolChildWriter.child_exiting()
    runtime.install(None)
