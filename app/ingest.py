"""What an event task does with a message: validate, fix its identity and time, append to the buffer."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pydantic

from app import buffer
from app.errors import ValidationError
from app.events import Event, derive_event_id, from_epoch_ms
from app.payloads import PAYLOADS, Payload
from app.redis_store import RedisClient


def parse(task: str, kwargs: Mapping[str, Any]) -> Payload:
    """Validate a task's keyword arguments; raises ``ValidationError`` with a readable reason."""
    model = PAYLOADS.get(task)
    if model is None:
        raise ValidationError(f"unknown event task {task!r}; expected one of {', '.join(PAYLOADS)}")
    try:
        return model.model_validate(dict(kwargs))
    except pydantic.ValidationError as exc:
        raise ValidationError(f"{task}: {_summarise(exc)}") from exc


def _summarise(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def receive(r: RedisClient, task: str, task_id: str, kwargs: Mapping[str, Any]) -> list[Event]:
    """Turn one task message into buffered events; returns them.

    A producer that omits ``event_id`` gets one derived from the Celery task id (stable across broker
    redeliveries); one that omits ``occurred_at`` gets the first time the worker saw the message.
    """
    payload = parse(task, kwargs)
    event_id = payload.event_id or derive_event_id(task_id, task)
    if payload.occurred_at is not None:
        when = payload.occurred_at
    else:
        when = from_epoch_ms(buffer.pin_first_seen_ms(r, str(event_id), int(time.time() * 1000)))
    events = payload.to_events(event_id, when)
    buffer.append(r, task, events)
    return events
