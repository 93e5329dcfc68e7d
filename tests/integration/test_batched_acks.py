"""The Redis transport's batched acknowledgements (``tasks.transport``), on a real Redis broker database.

An acknowledgement is queued, then sent with the next delivery's record, by the consumer loop's timer, or at once
when ``MAX_PENDING_ACKS`` wait; a clean stop sends the queued ones before it restores what was not acknowledged, so
an acknowledged message is never run again after a stop and an unacknowledged one always is."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from tasks import transport
from tests.stack import BROKER_REDIS_URL, REDIS_CLUSTER

pytestmark = pytest.mark.skipif(REDIS_CLUSTER, reason="the Redis broker is a standalone Redis")


@pytest.fixture()
def broker() -> Iterator[tuple[redis.Redis, Queue]]:
    r = redis.Redis.from_url(BROKER_REDIS_URL)
    r.flushdb()
    name = f"acks-{uuid.uuid4().hex[:8]}"
    yield r, Queue(name, Exchange(name, type="direct"), routing_key=name)
    r.flushdb()
    r.close()


def _publish(queue: Queue, n: int) -> None:
    with Connection(BROKER_REDIS_URL, transport="tasks.transport:Transport") as conn:
        producer = Producer(conn.channel(), exchange=queue.exchange, routing_key=queue.routing_key)
        for i in range(n):
            producer.publish({"i": i}, declare=[queue], serializer="json")


class Taker:
    """A consumer taking one message at a time (``drain_events``, no event loop: no timer)."""

    def __init__(self, queue: Queue) -> None:
        self.conn = Connection(BROKER_REDIS_URL, transport="tasks.transport:Transport")
        self.channel = self.conn.channel()
        self.channel.basic_qos(0, 1, False)
        self.got: list[Any] = []
        self.consumer = Consumer(self.channel, [queue], callbacks=[lambda body, msg: self.got.append(msg)])
        self.consumer.consume()

    def take(self) -> Any:
        before = len(self.got)
        while len(self.got) == before:
            self.conn.drain_events(timeout=5)
        return self.got[-1]

    def close(self) -> None:
        self.conn.release()


def _number(payload: dict[str, Any]) -> int:
    body = payload["body"]
    if payload["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return int(json.loads(body)["i"])


def _unacked_bodies(r: redis.Redis) -> list[int]:
    return sorted(_number(json.loads(raw)[0]) for raw in r.hvals("unacked"))


def _queued(r: redis.Redis, queue: Queue) -> list[int]:
    return sorted(_number(json.loads(raw)) for raw in r.lrange(queue.name, 0, -1))


def test_an_ack_rides_with_the_next_delivery_and_a_stop_restores_only_the_unacknowledged(
    broker: tuple[redis.Redis, Queue],
) -> None:
    r, queue = broker
    _publish(queue, 4)
    taker = Taker(queue)
    try:
        first = taker.take()
        first.ack()
        assert _unacked_bodies(r) == [0]  # queued, not yet sent
        taker.take()  # the delivery's record carries the queued acknowledgement
        assert _unacked_bodies(r) == [1]
        taker.got[-1].ack()
        taker.take()  # message 2, never acknowledged
        assert _unacked_bodies(r) == [2]
    finally:
        taker.close()  # a clean stop: queued acks sent, then the unacknowledged restored
    assert r.hlen("unacked") == 0
    assert _queued(r, queue) == [2, 3]  # 0 and 1 were acknowledged: not run again


def test_a_full_batch_is_sent_at_once(broker: tuple[redis.Redis, Queue], monkeypatch: pytest.MonkeyPatch) -> None:
    r, queue = broker
    monkeypatch.setattr(transport, "MAX_PENDING_ACKS", 1)
    _publish(queue, 2)
    taker = Taker(queue)
    try:
        taker.take().ack()
        assert r.hlen("unacked") == 0  # a batch of one: sent with the acknowledgement itself
    finally:
        taker.close()
    assert _queued(r, queue) == [1]


def test_queued_acks_stay_queued_while_redis_refuses_them(broker: tuple[redis.Redis, Queue]) -> None:
    r, queue = broker
    _publish(queue, 2)
    taker = Taker(queue)
    try:
        taker.take().ack()
        qos = taker.channel.qos
        assert isinstance(qos, transport.QoS)
        original = qos.pipe_or_acquire

        def refusing(*args: Any, **kwargs: Any) -> Any:
            raise redis.ConnectionError("Redis is restarting")

        qos.pipe_or_acquire = refusing  # type: ignore[method-assign]
        with pytest.raises(redis.ConnectionError):
            qos.flush_acks()
        assert len(qos._acks) == 1  # kept for the next try
        qos.pipe_or_acquire = original  # type: ignore[method-assign]
        qos.flush_acks()
        assert qos._acks == [] and r.hlen("unacked") == 0
    finally:
        taker.close()
