"""Publish task messages the way a producer in another language would: plain kombu, Celery protocol 2."""

from __future__ import annotations

import uuid
from typing import Any

from kombu import Connection, Exchange, Queue

from bench.harness import task_body, task_headers
from tests.stack import BROKER_URL


def publish_raw(
    task: str,
    kwargs: dict[str, Any] | None = None,
    *,
    task_id: str | None = None,
    body: Any = None,
    content_type: str = "application/json",
    queue: str = "events",
    broker_url: str = BROKER_URL,
) -> str:
    task_id = task_id or str(uuid.uuid4())
    headers = task_headers(task, task_id, lang="js")
    if body is None:
        body = task_body(kwargs or {})
    exchange = Exchange(queue, type="direct")
    encoding: dict[str, Any] = {"serializer": "json"}
    if isinstance(body, bytes):  # already encoded (or deliberately garbage)
        encoding = {"content_type": content_type, "content_encoding": "binary"}
    with Connection(broker_url) as conn:
        conn.Producer().publish(
            body,
            exchange=exchange,
            routing_key=queue,
            declare=[Queue(queue, exchange, routing_key=queue)],
            headers=headers,
            **encoding,
        )
    return task_id
