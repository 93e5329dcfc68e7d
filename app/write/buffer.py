"""The durable event buffer between event tasks and ClickHouse.

An event task validates its message and appends the resulting events to a Redis stream in one round trip; only
then is the message acknowledged. A flusher thread in each worker reads the stream through a consumer group,
writes many events per ClickHouse insert, refreshes the affected caches, and only then acknowledges the stream
entries. A worker killed at any point leaves its entries pending in the group; they are read again by the same
consumer after a restart, or claimed by another consumer once idle. Replays are harmless because every query
is idempotent in ``eventId`` (see ``sql/0001``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis

from app.core import constants as c
from app.core.events import Event
from app.stores.redis_store import RedisClient, is_cluster

# Cluster mode: replicas that must hold a buffer entry before its message is acknowledged, and how long to wait.
REPLICAS_TO_WAIT = 1
REPLICA_WAIT_MS = 1000

_PIN_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
return redis.call('GET', KEYS[1])
"""


@dataclass(frozen=True, slots=True)
class Entry:
    entry_id: str
    task: str
    events: list[Event]


def pin_first_seen_ms(r: RedisClient, event_id: str, now_ms: int, ttl_s: int = c.EVENT_TIME_PIN_TTL_S) -> int:
    """The first time this event id was seen; a redelivered message keeps its original receive time."""
    key = c.EVENT_TIME_PIN_KEY.format(event_id=event_id)
    return int(r.eval(_PIN_SCRIPT, 1, key, now_ms, ttl_s))


def append(r: RedisClient, task: str, events: list[Event]) -> str:
    """Append one message's events as one stream entry; returns the entry id."""
    body = json.dumps([e.to_row() for e in events], separators=(",", ":"))
    if is_cluster(r):
        return _append_replicated(r, task, body)
    pipe = r.pipeline(transaction=False)
    pipe.xadd(c.EVENT_STREAM_KEY, {"t": task, "e": body})
    pipe.expire(c.EVENT_STREAM_KEY, c.EVENT_STREAM_TTL_S)
    entry_id, _ = pipe.execute()
    return str(entry_id)


def _append_replicated(r: RedisClient, task: str, body: str) -> str:
    """Cluster mode: the entry is acknowledged (and so is the message) only once a replica holds it too, so that a
    master failing over right after the append loses nothing. ``WAIT`` counts the writes of its own connection: the
    append and the wait go to the stream's master in one pipeline on one connection. A master that cannot reach a
    replica in time raises, and the message is retried (a second copy of an entry is harmless)."""
    node = cast(Any, r).get_node_from_key(c.EVENT_STREAM_KEY)
    pipe = node.redis_connection.pipeline(transaction=False)
    pipe.xadd(c.EVENT_STREAM_KEY, {"t": task, "e": body})
    pipe.expire(c.EVENT_STREAM_KEY, c.EVENT_STREAM_TTL_S)
    pipe.execute_command("WAIT", REPLICAS_TO_WAIT, REPLICA_WAIT_MS)
    try:
        entry_id, _, acked = pipe.execute()
    except redis.ResponseError as exc:  # MOVED after a failover: the client learns the new map, the task retries
        cast(Any, r).nodes_manager.initialize()
        raise redis.ConnectionError(f"event buffer moved: {exc}") from exc
    if int(acked) < REPLICAS_TO_WAIT:
        raise redis.ConnectionError(f"no replica acknowledged the event buffer entry {entry_id} in time")
    return str(entry_id)


def ensure_group(r: RedisClient) -> None:
    try:
        r.xgroup_create(c.EVENT_STREAM_KEY, c.EVENT_STREAM_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    r.expire(c.EVENT_STREAM_KEY, c.EVENT_STREAM_TTL_S)


def _decode(raw: list[tuple[str, dict[str, str]]]) -> list[Entry]:
    out = []
    times: dict[int, datetime] = {}
    for entry_id, fields in raw:
        if not fields:  # deleted while pending
            continue
        events = [Event.from_row(row, times) for row in json.loads(fields["e"])]
        out.append(Entry(entry_id, fields.get("t", ""), events))
    return out


def read(r: RedisClient, consumer: str, count: int, block_ms: int | None, *, own_pending: bool = False) -> list[Entry]:
    """New entries for this consumer, or (``own_pending``) those it read earlier and never acknowledged."""
    reply: Any = r.xreadgroup(
        c.EVENT_STREAM_GROUP,
        consumer,
        {c.EVENT_STREAM_KEY: "0" if own_pending else ">"},
        count=count,
        block=None if own_pending or not block_ms else block_ms,
    )
    if not reply:
        return []
    _stream, raw = reply[0]
    return _decode(raw)


def ack(r: RedisClient, entry_ids: list[str]) -> None:
    if not entry_ids:
        return
    pipe = r.pipeline(transaction=True)
    pipe.xack(c.EVENT_STREAM_KEY, c.EVENT_STREAM_GROUP, *entry_ids)
    pipe.xdel(c.EVENT_STREAM_KEY, *entry_ids)
    pipe.execute()


def delivery_counts(r: RedisClient, consumer: str, entry_ids: list[str]) -> dict[str, int]:
    """How many times each of this consumer's pending entries has been delivered."""
    if not entry_ids:
        return {}
    rows: Any = r.xpending_range(
        c.EVENT_STREAM_KEY,
        c.EVENT_STREAM_GROUP,
        min=min(entry_ids, key=_id_key),
        max=max(entry_ids, key=_id_key),
        count=len(entry_ids) + 1000,
        consumername=consumer,
    )
    return {str(row["message_id"]): int(row["times_delivered"]) for row in rows}


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-", 1)
    return int(ms), int(seq)


def claim_stale(r: RedisClient, consumer: str, idle_ms: int, count: int) -> list[Entry]:
    """Take over entries another consumer read but did not acknowledge for ``idle_ms`` (it likely died)."""
    reply: Any = r.xautoclaim(c.EVENT_STREAM_KEY, c.EVENT_STREAM_GROUP, consumer, idle_ms, "0-0", count=count)
    return _decode(reply[1])


@dataclass(frozen=True)
class BufferStats:
    length: int
    pending: int
    oldest_pending_age_s: float


def stats(r: RedisClient) -> BufferStats:
    length = int(r.xlen(c.EVENT_STREAM_KEY))
    try:
        summary = r.xpending(c.EVENT_STREAM_KEY, c.EVENT_STREAM_GROUP)
    except redis.ResponseError:
        return BufferStats(length, 0, 0.0)
    pending = int(summary["pending"])
    age = 0.0
    if pending and summary["min"]:
        oldest_ms = int(str(summary["min"]).split("-", 1)[0])
        age = max(0.0, time.time() - oldest_ms / 1000)
    return BufferStats(length, pending, age)
