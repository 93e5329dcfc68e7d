"""The Celery app a web app sends events with: the message contract (JSON only, the three queues declared exactly
as the workers declare them, tasks routed by name), no results, no task-sent events, and no task of its own.

``sending_app`` builds it from a broker URL, or from the environment (``CELERY_BROKER_URL``, else ``REDIS_URL``,
else the embedded stack's private Redis on this machine). Celery, kombu and the settings are imported when it is
called, not when ``app.client`` is imported. The worker's processes start from the same settings
(``sender_config``) and add their own (``app.stores.broker``, ``tasks/config.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.core import constants as c
from app.core.errors import ValidationError

if TYPE_CHECKING:
    from celery import Celery

    from app.core.settings import Settings

QUEUES = (c.EVENTS_QUEUE, c.MAINTENANCE_QUEUE, c.READS_QUEUE)


def transport_options(broker_url: str) -> dict[str, Any]:
    """The broker transport's options every process of the stack uses (workers add their own)."""
    return {"confirm_publish": True} if broker_url.startswith(("amqp://", "amqps://", "pyamqp://")) else {}


def sender_config(broker_url: str) -> dict[str, Any]:
    """The Celery settings of every process that sends tasks to this service's workers."""
    from kombu import Exchange, Queue

    return {
        "broker_url": broker_url,
        # Celery lets the CELERY_BROKER_URL variable override ``broker_url``; the read and write URLs win over both,
        # so the broker is the one given here (a process may hold settings for another deployment).
        "broker_read_url": broker_url,
        "broker_write_url": broker_url,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "timezone": "UTC",
        "enable_utc": True,
        # No "task-sent" events: they would double the producer's broker writes; workers report the rest.
        "task_send_sent_event": False,
        # RabbitMQ: a publish returns once the broker has confirmed it (publisher confirms), so a message the
        # broker never took raises at the sender instead of vanishing with a connection that dropped meanwhile.
        # A Redis broker's LPUSH reply is its confirmation already.
        "broker_transport_options": transport_options(broker_url),
        # Queues and routes are part of the message contract: a sender declares them exactly as workers do.
        "task_queues": [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        "task_default_exchange": c.EVENTS_QUEUE,
        "task_default_routing_key": c.EVENTS_QUEUE,
        "task_default_queue": c.EVENTS_QUEUE,
        "task_routes": {
            **{name: {"queue": c.EVENTS_QUEUE} for name in c.EVENT_TASKS},
            **{name: {"queue": c.READS_QUEUE} for name in c.READ_TASKS},
            **{name: {"queue": c.MAINTENANCE_QUEUE} for name in c.JOBS},
            c.BENCH_NOOP: {"queue": c.EVENTS_QUEUE},
            c.BENCH_ENGINE_COUNTERS: {"queue": c.READS_QUEUE},
            # Celery's own periodic cleanup (beat adds it only for result backends without expiry).
            "celery.backend_cleanup": {"queue": c.MAINTENANCE_QUEUE},
        },
    }


def sending_app(broker_url: str | None = None, settings: Settings | None = None) -> Celery:
    """A Celery app that sends this service's tasks by name to ``broker_url`` (default: from ``settings``, read
    from the environment when not given)."""
    from celery import Celery

    from app.core.settings import load_settings

    app = Celery("usermetrics-sender", set_as_current=False)
    app.conf.update(sender_config(broker_url or configured_broker(settings or load_settings())))
    return app


def configured_broker(settings: Settings) -> str:
    """``CELERY_BROKER_URL``, else ``REDIS_URL``, else the private Redis of an embedded stack running here."""
    url = settings.celery_broker_url or settings.redis_url
    if url:
        return url
    from app.local.embedded_redis import running_url

    running = running_url(settings)
    if running is None:
        raise ValidationError(
            "no broker: set CELERY_BROKER_URL (or REDIS_URL), or start the embedded stack (make run) on this machine"
        )
    return running
