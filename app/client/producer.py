"""Typed producer helpers: what a Python web app imports to enqueue events.

An event's fields are declared once, by its payload model in ``app.core.payloads``: each per-event method takes that
model's own fields as its parameters (positional or keyword, in the model's order, with its defaults), plus a
keyword-only ``occurred_at``. Every method goes through ``send``, which validates with the same models the worker
uses (bad input raises ``ValidationError`` and nothing is enqueued), assigns a time-ordered ``event_id`` and
``occurred_at`` (now, unless given), and sends the task by name to the ``events`` queue with JSON keyword arguments.
Call them after the web app's transaction commits (``app.client.dual_write.after_commit``), so that a rolled-back
write never produces an event.
"""

from __future__ import annotations

import functools
import inspect
import operator
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from app.core import constants as c
from app.core.events import new_event_id
from app.core.payloads import PAYLOADS, Payload, parse

if TYPE_CHECKING:  # the web app's Celery app is passed in: sending events needs no import of Celery here
    from celery import Celery

# Fields every payload has (stamped by ``build_event``) or implies (the task name): not parameters of a method.
_ENVELOPE = frozenset({*Payload.model_fields, "type"})


def build_event(task: str, /, **fields: Any) -> Payload:
    """Validate one event task's keyword arguments and stamp its ``event_id`` and ``occurred_at`` (now, unless
    given). Needs no broker; raises ``ValidationError`` with the reason on bad input."""
    fields.setdefault("event_id", new_event_id())
    fields.setdefault("occurred_at", datetime.now(UTC))
    return parse(task, fields)


def event_signature(task: str) -> inspect.Signature:
    """The parameters of ``task``'s producer method, read from its payload model: ``self``, the model's own fields
    in declaration order, then keyword-only ``occurred_at``. A field keeps the model's default only if no required
    field follows it (Python's rule for positional parameters); otherwise the caller passes it."""
    own = [(name, info) for name, info in PAYLOADS[task].model_fields.items() if name not in _ENVELOPE]
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)]
    for position, (name, info) in enumerate(own):
        optional = not any(later.is_required() for _, later in own[position:])
        default = info.default if optional else inspect.Parameter.empty
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params.append(inspect.Parameter(name, kind, default=default, annotation=_shown(info.annotation)))
    keyword = inspect.Parameter.KEYWORD_ONLY
    params.append(inspect.Parameter("occurred_at", keyword, default=None, annotation=datetime | None))
    return inspect.Signature(params, return_annotation=uuid.UUID)


def _shown(annotation: Any) -> Any:
    """A field's type as a reader wants it in ``help()``: without its pydantic constraints (``int | None``)."""
    if get_origin(annotation) is Annotated:
        return _shown(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return functools.reduce(operator.or_, (_shown(arg) for arg in get_args(annotation)))
    return annotation


def _event_method(task: str) -> Callable[..., uuid.UUID]:
    """The ``EventProducer`` method that sends ``task``: binds its arguments as a Python call would (a missing or
    unknown argument raises ``TypeError``), then sends only what the caller gave, so the model's defaults apply."""
    signature = event_signature(task)

    def method(self: EventProducer, /, *args: Any, **kwargs: Any) -> uuid.UUID:
        fields = signature.bind(self, *args, **kwargs).arguments
        del fields["self"]
        if fields.get("occurred_at") is None:
            fields.pop("occurred_at", None)
        return self.send(task, **fields)

    method.__name__ = task
    method.__qualname__ = f"EventProducer.{task}"
    method.__doc__ = PAYLOADS[task].__doc__
    method.__signature__ = signature  # type: ignore[attr-defined]
    return method


class EventProducer:
    """Sends event tasks through ``celery_app`` (the web app's Celery app, configured with the workers' broker)."""

    def __init__(self, celery_app: Celery) -> None:
        self.celery = celery_app

    def send(self, task: str, **kwargs: Any) -> uuid.UUID:
        """Validate, stamp and enqueue one event task; returns its ``event_id``."""
        payload = build_event(task, **kwargs)
        body = payload.model_dump(mode="json", exclude_none=True)
        # ``sent_at_ms`` lets the exporter tell how long the oldest message has waited in the broker.
        self.celery.send_task(task, kwargs=body, queue=c.EVENTS_QUEUE, headers={"sent_at_ms": int(time.time() * 1000)})
        assert payload.event_id is not None
        return payload.event_id

    record_follow = _event_method(c.RECORD_FOLLOW)
    record_upload = _event_method(c.RECORD_UPLOAD)
    set_reaction = _event_method(c.SET_REACTION)
    record_entity_metric = _event_method(c.RECORD_ENTITY_METRIC)

    def record_events(self, events: list[dict[str, Any]], *, occurred_at: datetime | None = None) -> uuid.UUID:
        """Many events in one message; each item is ``{"type": <task name>, ...kwargs}``, and gets an ``event_id``
        of its own unless it has one."""
        stamped = [{"event_id": str(new_event_id()), **item} for item in events]
        when = {"occurred_at": occurred_at} if occurred_at is not None else {}
        return self.send(c.RECORD_EVENTS, events=stamped, **when)
