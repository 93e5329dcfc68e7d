"""Event tasks: validate the message and hand its events to the durable buffer."""

from __future__ import annotations

from typing import Any

from app.core import constants as c
from app.core.errors import ValidationError
from app.stores import runtime
from app.write import ingest
from tasks.base import project_task
from tasks.celery_app import settings

# Task events (Flower's per-task view) for the high-volume event tasks only when asked for: three broker
# publishes per message cost much of a worker's throughput. Reads and jobs always send theirs.
_EVENTS = settings.event_task_events


def _receive(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    if args:
        raise ValidationError(f"{task.name} takes keyword arguments only, got {len(args)} positional")
    rt = runtime.get()
    events = ingest.receive(rt.redis, task.name, task.request.id, kwargs, ingest.pin_ttl_s(rt.settings))
    return len(events)


@project_task(c.RECORD_FOLLOW, send_events=_EVENTS)
def record_follow(self: Any, *args: Any, **kwargs: Any) -> int:
    """kwargs: follower_id, user_id, is_follow=true, occurred_at?, event_id?"""
    return _receive(self, args, kwargs)


@project_task(c.RECORD_UPLOAD, send_events=_EVENTS)
def record_upload(self: Any, *args: Any, **kwargs: Any) -> int:
    """kwargs: user_id, content_type (Model/Post/Image), entity_id, is_removed=false, occurred_at?, event_id?"""
    return _receive(self, args, kwargs)


@project_task(c.SET_REACTION, send_events=_EVENTS)
def set_reaction(self: Any, *args: Any, **kwargs: Any) -> int:
    """kwargs: user_id, image_id, reactions (flags 0..15), owner_id?, occurred_at?, event_id?"""
    return _receive(self, args, kwargs)


@project_task(c.RECORD_ENTITY_METRIC, send_events=_EVENTS)
def record_entity_metric(self: Any, *args: Any, **kwargs: Any) -> int:
    """kwargs: entity_type, entity_id, metric_type, metric_value, user_id, owner_id?, occurred_at?, event_id?"""
    return _receive(self, args, kwargs)


@project_task(c.RECORD_EVENTS, send_events=_EVENTS)
def record_events(self: Any, *args: Any, **kwargs: Any) -> int:
    """kwargs: events (a list of {"type": <event task name>, ...its kwargs}), occurred_at?, event_id?"""
    return _receive(self, args, kwargs)
