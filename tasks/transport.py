"""Celery's Redis transport, hardened against what a hostile or broken producer can push onto a queue list.

kombu's Redis channel pops an item with ``BRPOP`` and parses it as a kombu message before any consumer code runs.
An item that is not JSON, or not a kombu message, raises there: the worker's consumer dies on it and, because
the item is already popped, it is gone without a trace. This channel checks the item first and turns a bad one
into a dead letter with its raw body (size-capped) and reason; good items are delivered as before.

It also records on each message the queue it was really popped from (``delivery_info["queue"]``): the routing
key inside a Redis message is whatever the producer wrote, so the worker's queue-isolation check
(``tasks.consumer``) uses this instead.

And it builds its synchronous Redis client once, not once per call: kombu builds a new client object for every
acknowledgement and every delivery's bookkeeping (``conn_or_acquire``), which was about 8% of a busy worker's
interpreter time. A redis-py client is safe to share between threads (each command takes a connection from the
channel's pool), and a new one is built when the channel's pool is replaced (after ``close``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from app.stores import runtime
from app.write import deadletters

log = logging.getLogger(__name__)


def _problem(payload: Any) -> str | None:
    """Why ``payload`` is not a kombu message (``None`` when it is one)."""
    if not isinstance(payload, dict):
        return f"queue item is JSON {type(payload).__name__}, not a kombu message object"
    properties = payload.get("properties")
    if not isinstance(properties, dict) or "delivery_tag" not in properties:
        return "queue item has no properties.delivery_tag (not a kombu message)"
    if not isinstance(payload.get("headers", {}), dict | None):
        return "queue item headers are not an object"
    info = properties.get("delivery_info", {})
    if not isinstance(info, dict):
        return "queue item properties.delivery_info is not an object"
    return None


def dead_letter_item(queue: str, raw: bytes | str, reason: str) -> None:
    """Record an undeliverable queue item; logged (capped) if even that fails, so it never vanishes silently."""
    text = bytes_to_str(raw) if isinstance(raw, bytes) else raw
    try:
        deadletters.record(
            runtime.get().redis,
            task="",
            reason=reason,
            error="UndeliverableItem",
            task_id="",
            kwargs={"raw_body": text, "queue": queue},
        )
    except Exception:
        log.exception("could not dead-letter an item of queue %s (%s): %.2000r", queue, reason, text)


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()  # type: ignore[attr-defined]
        yield shared

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:  # type: ignore[attr-defined]
                # As kombu does: drop the connection so that the next poll reconnects.
                self.client.connection.disconnect()
                raise
            if not reply:
                raise Empty()
            dest, item = reply
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)  # type: ignore[attr-defined]
            self._deliver_item(dest, item)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _deliver_item(self, dest: str, item: bytes | str) -> None:
        try:
            payload = loads(bytes_to_str(item))
        except Exception as exc:
            dead_letter_item(dest, item, f"queue item is not JSON: {exc}")
            return
        problem = _problem(payload)
        if problem is not None:
            dead_letter_item(dest, item, problem)
            return
        payload["properties"].setdefault("delivery_info", {})["queue"] = dest
        self.connection._deliver(payload, dest)


class Transport(kombu_redis.Transport):
    Channel = Channel
