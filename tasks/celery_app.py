"""The Celery application: configuration, per-process clients, the flusher bootstep (the consumer: ``tasks.worker``)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps, signals

from app import broker, exporter, migrations, runtime
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


@signals.worker_process_shutdown.connect
def _close_process(**_: Any) -> None:
    runtime.install(None)


# Register the task modules.
import tasks.bench  # noqa: E402,F401
import tasks.events  # noqa: E402,F401
import tasks.maintenance  # noqa: E402,F401
import tasks.reads  # noqa: E402,F401
