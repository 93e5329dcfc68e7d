"""Event tasks: validate the message and hand its events to the durable buffer.

Each task's keyword arguments are declared by its payload model in ``app.core.payloads`` (``PAYLOADS``).
"""

from __future__ import annotations

from typing import Any

from app.core import constants as c
from app.core.errors import ValidationError
from app.stores import runtime
from app.write import ingest
from tasks.base import project_task

# Task events (Flower's per-task view) for a sampled share of the high-volume event tasks' messages only
# (EVENT_TASK_EVENTS_SAMPLE): three broker publishes per message cost much of a worker's throughput. Reads and
# jobs send theirs for every message.


def _receive(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    if args:
        raise ValidationError(f"{task.name} takes keyword arguments only, got {len(args)} positional")
    rt = runtime.get()
    events = ingest.receive(rt.redis, task.name, task.request.id, kwargs, ingest.pin_ttl_s(rt.settings))
    return len(events)


@project_task(c.RECORD_FOLLOW, sampled_events=True)
def record_follow(self: Any, *args: Any, **kwargs: Any) -> int:
    """Keyword arguments: ``app.core.payloads.RecordFollow`` (``schemas/record_follow.json``)."""
    return _receive(self, args, kwargs)


@project_task(c.RECORD_UPLOAD, sampled_events=True)
def record_upload(self: Any, *args: Any, **kwargs: Any) -> int:
    """Keyword arguments: ``app.core.payloads.RecordUpload`` (``schemas/record_upload.json``)."""
    return _receive(self, args, kwargs)


@project_task(c.SET_REACTION, sampled_events=True)
def set_reaction(self: Any, *args: Any, **kwargs: Any) -> int:
    """Keyword arguments: ``app.core.payloads.SetReaction`` (``schemas/set_reaction.json``)."""
    return _receive(self, args, kwargs)


@project_task(c.RECORD_ENTITY_METRIC, sampled_events=True)
def record_entity_metric(self: Any, *args: Any, **kwargs: Any) -> int:
    """Keyword arguments: ``app.core.payloads.RecordEntityMetric`` (``schemas/record_entity_metric.json``)."""
    return _receive(self, args, kwargs)


@project_task(c.RECORD_EVENTS, sampled_events=True)
def record_events(self: Any, *args: Any, **kwargs: Any) -> int:
    """Keyword arguments: ``app.core.payloads.RecordEvents`` (``schemas/record_events.json``)."""
    return _receive(self, args, kwargs)
