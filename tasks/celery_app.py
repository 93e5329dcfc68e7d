"""The Celery application: configuration, per-process clients, the flusher bootstep (the consumer: ``tasks.worker``)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps, signals
from celery.concurrency import prefork

from app import broker, exporter, runtime
from app.settings import Settings, load_settings
from tasks.config import celery_config
from tasks.writer import PoolChildWriter, WriteThreads, ensure_schema

log = logging.getLogger(__name__)

celery_app = Celery("usermetrics")
celery_app.config_from_object(celery_config(load_settings()))


def configure(settings: Settings) -> Celery:
    """Point the app at the stores of ``settings`` (the CLI, once it knows the embedded Redis URL)."""
    celery_app.conf.update(celery_config(settings))
    return celery_app


class FlusherStep(bootsteps.StartStopStep):
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


celery_app.steps["worker"].add(FlusherStep)


@signals.worker_init.connect
def _restore_unacknowledged(**_: Any) -> None:
    """Embedded mode: this worker owns the ClickHouse data path, so no other worker consumes its broker. Messages
    a killed worker had taken but not acknowledged go back to their queues now, not after the broker's visibility
    timeout (an hour). Server mode: RabbitMQ requeues them when the dead worker's connection drops; with a Redis
    broker they come back after ``BROKER_VISIBILITY_TIMEOUT_S`` (README, Reliability)."""
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
    runtime.get()
    PoolChildWriter.child_started()


@signals.worker_process_shutdown.connect
def _close_process(**_: Any) -> None:
    PoolChildWriter.child_exiting()
    runtime.install(None)


# Register the task modules.
import tasks.bench  # noqa: E402,F401
import tasks.events  # noqa: E402,F401
import tasks.maintenance  # noqa: E402,F401
import tasks.reads  # noqa: E402,F401
