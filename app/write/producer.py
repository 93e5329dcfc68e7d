"""Typed producer helpers: what a Python web app imports to enqueue events.

Each helper validates with the same models the worker uses (bad input raises ``ValidationError`` and nothing is
enqueued), assigns a time-ordered ``event_id`` and ``occurred_at`` (now, unless given), and sends the task by name
to the ``events`` queue with JSON keyword arguments. Call them after the web app's transaction commits (for
SQLAlchemy, from an ``after_commit`` hook), so that a rolled-back write never produces an event.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import Celery

from app.core import constants as c
from app.core.events import new_event_id
from app.write.ingest import parse


class EventProducer:
    def __init__(self, celery_app: Celery) -> None:
        self.celery = celery_app

    def send(self, task: str, **kwargs: Any) -> uuid.UUID:
        """Validate, stamp and enqueue one event task; returns its ``event_id``."""
        kwargs.setdefault("event_id", new_event_id())
        kwargs.setdefault("occurred_at", datetime.now(UTC))
        payload = parse(task, kwargs)
        body = payload.model_dump(mode="json", exclude_none=True)
        # ``sent_at_ms`` lets the exporter tell how long the oldest message has waited in the broker.
        self.celery.send_task(task, kwargs=body, queue=c.EVENTS_QUEUE, headers={"sent_at_ms": int(time.time() * 1000)})
        assert payload.event_id is not None
        return payload.event_id

    def record_follow(
        self, follower_id: int, user_id: int, is_follow: bool = True, *, occurred_at: datetime | None = None
    ) -> uuid.UUID:
        return self.send(
            c.RECORD_FOLLOW,
            follower_id=follower_id,
            user_id=user_id,
            is_follow=is_follow,
            **_when(occurred_at),
        )

    def record_upload(
        self,
        user_id: int,
        content_type: str,
        entity_id: int,
        is_removed: bool = False,
        *,
        occurred_at: datetime | None = None,
    ) -> uuid.UUID:
        return self.send(
            c.RECORD_UPLOAD,
            user_id=user_id,
            content_type=content_type,
            entity_id=entity_id,
            is_removed=is_removed,
            **_when(occurred_at),
        )

    def set_reaction(
        self,
        user_id: int,
        image_id: int,
        reactions: int,
        owner_id: int | None = None,
        *,
        occurred_at: datetime | None = None,
    ) -> uuid.UUID:
        extra = {"owner_id": owner_id} if owner_id is not None else {}
        return self.send(
            c.SET_REACTION,
            user_id=user_id,
            image_id=image_id,
            reactions=reactions,
            **extra,
            **_when(occurred_at),
        )

    def record_entity_metric(
        self,
        entity_type: str,
        entity_id: int,
        metric_type: str,
        metric_value: int,
        user_id: int,
        owner_id: int | None = None,
        *,
        occurred_at: datetime | None = None,
    ) -> uuid.UUID:
        extra = {"owner_id": owner_id} if owner_id is not None else {}
        return self.send(
            c.RECORD_ENTITY_METRIC,
            entity_type=entity_type,
            entity_id=entity_id,
            metric_type=metric_type,
            metric_value=metric_value,
            user_id=user_id,
            **extra,
            **_when(occurred_at),
        )

    def record_events(self, events: list[dict[str, Any]], *, occurred_at: datetime | None = None) -> uuid.UUID:
        """Many events in one message; each item is ``{"type": <task name>, ...kwargs}``."""
        stamped = [{"event_id": str(new_event_id()), **item} for item in events]
        return self.send(c.RECORD_EVENTS, events=stamped, **_when(occurred_at))


def _when(occurred_at: datetime | None) -> dict[str, datetime]:
    return {"occurred_at": occurred_at} if occurred_at is not None else {}
