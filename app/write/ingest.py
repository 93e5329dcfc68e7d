"""What an event task does with a message: validate, fix its identity and time, append to the buffer."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from app.core import constants as c
from app.core.events import Event, derive_event_id, from_epoch_ms
from app.core.payloads import parse
from app.core.settings import Settings
from app.stores.redis_store import RedisClient
from app.write import buffer


def pin_ttl_s(settings: Settings) -> int:
    """How long a message's first receive time is kept: as long as the broker may still redeliver it.

    A redelivery comes within the broker's visibility timeout (Redis) or as soon as a worker dies (RabbitMQ), and a
    retry within the whole backoff span. Memory is bounded by the raw-message rate times this window, which is why
    the window follows the settings instead of a fixed long span. A copy redelivered after the window gets a new
    time; the event-id registry then refuses it
    as a reused id (``app.write.event_ids``) and the first copy, already counted, stands.
    """
    retry_span_s = settings.task_max_retries * settings.retry_backoff_max_s
    return settings.broker_visibility_timeout_s + retry_span_s + 600


def receive(
    r: RedisClient,
    task: str,
    task_id: str,
    kwargs: Mapping[str, Any],
    pin_ttl_s: int = c.EVENT_TIME_PIN_TTL_S,
) -> list[Event]:
    """Turn one task message into buffered events; returns them.

    A producer that omits ``event_id`` gets one derived from the Celery task id (stable across broker
    redeliveries); one that omits ``occurred_at`` gets the first time the worker saw the message (kept for
    ``pin_ttl_s``).
    """
    payload = parse(task, kwargs)
    event_id = payload.event_id or derive_event_id(task_id, task)
    if payload.occurred_at is not None:
        when = payload.occurred_at
    else:
        when = from_epoch_ms(buffer.pin_first_seen_ms(r, str(event_id), int(time.time() * 1000), pin_ttl_s))
    events = payload.to_events(event_id, when)
    buffer.append(r, task, events)
    return events
