"""Celery configuration, built from the project settings."""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from app import constants as c
from app.runtime import resolve_redis_url
from app.settings import Settings
from tasks.schedule import beat_schedule


def celery_config(settings: Settings) -> dict[str, Any]:
    try:
        redis_url = resolve_redis_url(settings)
    except Exception:
        # Not running yet (e.g. `python -m app --help`); connecting later gives the clear error.
        redis_url = "redis://127.0.0.1:6379/0"
    broker = settings.celery_broker_url or redis_url
    return {
        "broker_url": broker,
        # Celery lets the CELERY_BROKER_URL variable override ``broker_url``; the read and write URLs win over both,
        # so the broker is the one of these settings (a process may hold settings for another deployment).
        "broker_read_url": broker,
        "broker_write_url": broker,
        # Redis brokers get the hardened channel (bad queue items become dead letters; the real queue is known).
        **({"broker_transport": "tasks.transport:Transport"} if broker.startswith(("redis://", "rediss://")) else {}),
        "broker_connection_retry_on_startup": True,
        # Unacknowledged messages (a worker died) return to the queue after this long; longer than any task.
        "broker_transport_options": {"visibility_timeout": settings.broker_visibility_timeout_s},
        "result_backend": redis_url,
        "result_expires": 3600,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "timezone": "UTC",
        "enable_utc": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Small tasks: a modest prefetch keeps the pool busy without hoarding messages a peer could run.
        "worker_prefetch_multiplier": settings.worker_prefetch,
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name)
            for name in (c.EVENTS_QUEUE, c.MAINTENANCE_QUEUE, c.READS_QUEUE)
        ],
        "task_default_exchange": c.EVENTS_QUEUE,
        "task_default_routing_key": c.EVENTS_QUEUE,
        "task_default_queue": c.EVENTS_QUEUE,
        "task_routes": {
            **{name: {"queue": c.EVENTS_QUEUE} for name in c.EVENT_TASKS},
            c.QUERY_USER_METRICS: {"queue": c.READS_QUEUE},
            c.QUERY_REACTIONS: {"queue": c.READS_QUEUE},
            c.APPLY_MIGRATIONS: {"queue": c.READS_QUEUE},
            **{name: {"queue": c.MAINTENANCE_QUEUE} for name in c.JOBS},
            c.QUERY_HISTORY: {"queue": c.READS_QUEUE},
            c.MANAGE_EXCLUDED_USERS: {"queue": c.READS_QUEUE},
            c.BENCH_NOOP: {"queue": c.EVENTS_QUEUE},
            # Celery's own periodic cleanup (beat adds it only for result backends without expiry).
            "celery.backend_cleanup": {"queue": c.MAINTENANCE_QUEUE},
        },
        "worker_send_task_events": settings.task_events,
        # No "task-sent" events: they would double the producer's broker writes; workers report the rest.
        "task_send_sent_event": False,
        "worker_consumer": "tasks.worker:DeadLetteringConsumer",
        "beat_schedule": beat_schedule(settings),
    }
