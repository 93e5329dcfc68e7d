"""The worker's Celery configuration: the broker settings every process shares (``app.stores.broker``) and what
only workers and beat need."""

from __future__ import annotations

from typing import Any

from app.core.settings import Settings
from app.stores.broker import client_config
from tasks.schedule import beat_schedule


def celery_config(settings: Settings) -> dict[str, Any]:
    config = client_config(settings)
    redis_broker = str(config["broker_url"]).startswith(("redis://", "rediss://"))
    return {
        **config,
        # Redis brokers get the hardened channel (bad queue items become dead letters; the real queue is known).
        **({"broker_transport": "tasks.transport:Transport"} if redis_broker else {}),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Small tasks: a modest prefetch keeps the pool busy without hoarding messages a peer could run.
        "worker_prefetch_multiplier": settings.worker_prefetch,
        "worker_send_task_events": settings.task_events,
        "worker_consumer": "tasks.consumer:DeadLetteringConsumer",
        "beat_schedule": beat_schedule(settings),
    }
