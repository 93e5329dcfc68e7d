"""The Celery application: configuration, per-process clients, the flusher bootstep, dead-lettering consumer."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps, signals
from celery.worker.consumer import Consumer
from kombu.message import Message

from app import deadletters, exporter, migrations, runtime
from app.flusher import Flusher
from app.locks import redis_lock
from app.refresher import Refresher
from app.settings import Settings, load_settings
from tasks.config import celery_config

log = logging.getLogger(__name__)

celery_app = Celery("usermetrics")
celery_app.config_from_object(celery_config(load_settings()))


def configure(settings: Settings) -> Celery:
    """Point the app at the stores of ``settings`` (the CLI, once it knows the embedded Redis URL)."""
    celery_app.conf.update(celery_config(settings))
    return celery_app


def _dead_letter_message(message: Message, reason: str, exc: BaseException | None) -> None:
    headers = message.headers or {}
    try:
        body: Any = message.body.decode("utf-8", "replace") if isinstance(message.body, bytes) else message.body
    except Exception:
        body = repr(message.body)
    try:
        deadletters.record(
            runtime.get().redis,
            task=str(headers.get("task", "")),
            reason=reason,
            error=type(exc).__name__ if exc else "",
            task_id=str(headers.get("id", "")),
            kwargs={"raw_body": body, "content_type": message.content_type},
        )
    except Exception:
        log.exception("could not record a dead letter for an undeliverable message: %s", reason)


class DeadLetteringConsumer(Consumer):
    """Celery's consumer, but a message it cannot run is dead-lettered (with its reason) before it is dropped."""

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        _dead_letter_message(message, f"cannot decode message: {exc}", exc)
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Message) -> None:
        _dead_letter_message(message, "message in an unknown format", None)
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        _dead_letter_message(message, f"unknown task: {exc}", exc)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        _dead_letter_message(message, f"invalid task message: {exc}", exc)
        super().on_invalid_task(body, message, exc)


class WriteThreads:
    """The worker's background threads of the write path, started and stopped together."""

    def __init__(self, *threads: Flusher | Refresher) -> None:
        self.threads = threads

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        for t in self.threads:
            t.stop()


class FlusherStep(bootsteps.StartStopStep):
    """Runs the event flusher beside the pool, in the worker process (which owns chdb in embedded mode)."""

    requires = ("celery.worker.components:Pool",)

    def start(self, worker: Any) -> None:
        rt = runtime.get()
        with redis_lock(rt.redis, "migrate", timeout_s=120):
            migrations.migrate(rt.clickhouse)
        # StartStopStep stops (or terminates) ``self.obj`` when the worker shuts down.
        self.obj = WriteThreads(Flusher(rt, consumer=worker.hostname), Refresher(rt))
        self.obj.start()
        exporter.serve(rt, rt.settings.metrics_port)


celery_app.steps["worker"].add(FlusherStep)


@signals.worker_process_init.connect
def _init_process(**_: Any) -> None:
    runtime.get()


@signals.worker_process_shutdown.connect
def _close_process(**_: Any) -> None:
    runtime.install(None)


# Register the task modules.
import tasks.bench  # noqa: E402,F401
import tasks.events  # noqa: E402,F401
import tasks.maintenance  # noqa: E402,F401
import tasks.reads  # noqa: E402,F401
