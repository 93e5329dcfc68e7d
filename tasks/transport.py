"""Celery's Redis transport, hardened against what a hostile or broken producer can push onto a queue list.

kombu's Redis channel pops an item with ``BRPOP`` and parses it as a kombu message before any consumer code runs.
An item that is not JSON, or not a kombu message, raises there: the worker's consumer dies on it and, because
the item is already popped, it is gone without a trace. This channel checks the item first and turns a bad one
into a dead letter with its raw body (size-capped) and reason; good items are delivered as before.

It also records on each message the queue it was really popped from (``delivery_info["queue"]``): the routing
key inside a Redis message is whatever the producer wrote, so the worker's queue-isolation check
(``tasks.consumer``) uses this instead.

It acknowledges in batches. kombu's Redis QoS sends one round trip to record each delivered message as unacked
and another to remove it when it is acknowledged, both from the consumer's one loop. Here an acknowledgement is
queued and sent with the next delivery's record (one ``MULTI``), or by a timer of the loop every 50 ms when no
delivery came, or at once when 100 are waiting. An acknowledged message thus stays in the unacked index for up to
50 ms more: a worker killed in that moment has it restored after the visibility timeout and run again, which the
event tasks absorb (ids), as they absorb any redelivery. A worker that stops sends them before it restores its
unacked messages, so a clean stop runs nothing twice.

And it builds its synchronous Redis client once, not once per call: kombu builds a new client object for every
acknowledgement and every delivery's bookkeeping (``conn_or_acquire``), which was about 8% of a busy worker's
interpreter time. A redis-py client is safe to share between threads (each command takes a connection from the
channel's pool), and a new one is built when the channel's pool is replaced (after ``close``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from queue import Empty
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

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


MAX_PENDING_ACKS = 100
ACK_DELAY_S = 0.05  # how often the consumer's loop sends the acknowledgements no delivery carried


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS with acknowledgements batched (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: list[str] = []
        self._acks_lock = threading.Lock()  # a thread pool acknowledges from its threads

    def _take_acks(self) -> list[str]:
        with self._acks_lock:
            acks, self._acks = self._acks, []
        return acks

    def _put_back(self, acks: list[str]) -> None:
        with self._acks_lock:
            self._acks[:0] = acks

    def _unindex(self, pipe: Any, tags: list[str]) -> None:
        if tags:
            pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags)

    def append(self, message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        acks = self._take_acks()
        try:
            with self.pipe_or_acquire() as pipe:
                self._unindex(pipe, acks)
                pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()}).hset(
                    self.unacked_key,
                    delivery_tag,
                    dumps([message._raw, delivery["exchange"], delivery["routing_key"]]),
                ).execute()
        except Exception:
            self._put_back(acks)
            raise
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        with self._acks_lock:
            self._acks.append(delivery_tag)
            full = len(self._acks) >= MAX_PENDING_ACKS
        virtual.QoS.ack(self, delivery_tag)
        if full:
            self.flush_acks()

    def flush_acks(self) -> None:
        """Send the queued acknowledgements now (kept queued when Redis fails)."""
        acks = self._take_acks()
        if not acks:
            return
        try:
            with self.pipe_or_acquire() as pipe:
                self._unindex(pipe, acks)
                pipe.execute()
        except Exception:
            self._put_back(acks)
            raise

    def restore_unacked(self, client: Any = None) -> Any:
        with contextlib.suppress(redis.RedisError):
            self.flush_acks()  # acknowledged messages are not restored
        return super().restore_unacked(client)


class Channel(kombu_redis.Channel):
    QoS = QoS
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

    _acks_tref: Any = None

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        if self._acks_tref is not None:  # a reconnect registers again
            self._acks_tref.cancel()
        self._acks_tref = loop.call_repeatedly(ACK_DELAY_S, self._flush_acks)

    def _flush_acks(self) -> None:
        """Every ``ACK_DELAY_S`` in the consumer's loop: the acknowledgements no delivery carried meanwhile."""
        for channel in list(self.channels or ()):
            qos = channel._qos
            if isinstance(qos, QoS):
                try:
                    qos.flush_acks()
                except redis.RedisError as exc:  # kept queued; the broker connection's own errors restart the consumer
                    log.warning("could not send %d acknowledgements yet: %s", len(qos._acks), exc)
