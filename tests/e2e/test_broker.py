"""The broker seen from outside Celery (app/stores/broker.py), against real brokers.

Redis: database 10 of the test Redis (no other test uses it). A message taken by a consumer that is then killed
stays in kombu's ``unacked`` hash; ``restore_unacked`` puts it back on its queue. ``queue_stats`` reports depth
(priority sub-queues included) and the age of the oldest waiting message from its ``sent_at_ms`` header.
RabbitMQ: when one answers on 127.0.0.1:5672 (guest/guest), the depth over AMQP too.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Exchange, Queue

from app.core.paths import REPO
from app.stores import broker
from tests.stack import BASE_REDIS_URL, with_db

BROKER_URL = with_db(BASE_REDIS_URL, 10)
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"

# Takes one message without acknowledging it, says so, then waits to be killed.
CONSUMER = """
import sys, time
from kombu import Connection, Exchange, Queue
with Connection(sys.argv[1]) as conn:
    queue = Queue(sys.argv[2], Exchange(sys.argv[2], type="direct"), routing_key=sys.argv[2])(conn.default_channel)
    message = queue.get(no_ack=False)
    print("took", message.payload["n"], flush=True)
    time.sleep(60)
"""

# Dies where a SIGKILL of a worker can land with the Redis transport: the message popped from its list, not yet
# recorded in the ``unacked`` hash (kombu does the two in separate round trips). With ``amqp``: right after it is
# delivered, before the ack.
KILLED_AFTER_POP = """
import os, signal, sys
from kombu import Connection, Exchange, Queue
from kombu.transport import redis as transport

def killed(self, message, delivery_tag):
    os.kill(os.getpid(), signal.SIGKILL)

transport.QoS.append = killed
with Connection(sys.argv[1]) as conn:
    queue = Queue(sys.argv[2], Exchange(sys.argv[2], type="direct"), routing_key=sys.argv[2], durable=False)
    message = queue(conn.default_channel).get(no_ack=False)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_after_pop(url: str, queue: str) -> int:
    done = subprocess.run([sys.executable, "-c", KILLED_AFTER_POP, url, queue], cwd=REPO, timeout=60, check=False)  # noqa: S603
    return done.returncode


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def _publish(url: str, queue: Queue, body: dict[str, object], **options: object) -> None:
    with Connection(url) as conn:
        conn.Producer().publish(
            body,
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            declare=[queue],
            serializer="json",
            **options,
        )


@pytest.fixture()
def redis_broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def test_restore_unacked_requeues_what_a_killed_consumer_took(redis_broker: redis.Redis) -> None:
    events = _queue("events")
    _publish(BROKER_URL, events, {"n": 1})
    _publish(BROKER_URL, events, {"n": 2})
    consumer = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", CONSUMER, BROKER_URL, "events"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert consumer.stdout is not None
        assert consumer.stdout.readline().strip() == "took 1"  # the oldest message
    finally:
        consumer.kill()  # dies holding it: no ack, no clean channel close that would restore it
        consumer.wait()
    assert redis_broker.llen("events") == 1
    assert redis_broker.hlen("unacked") == 1

    assert broker.restore_unacked(BROKER_URL) == 1

    assert redis_broker.hlen("unacked") == 0 and redis_broker.zcard("unacked_index") == 0
    assert redis_broker.llen("events") == 2
    with Connection(BROKER_URL) as conn:
        bound = events(conn.default_channel)
        received = []
        for _ in range(2):
            message = bound.get(no_ack=False)
            assert message is not None
            received.append((message.payload["n"], message.delivery_info.get("redelivered", False)))
            message.ack()
    # Behind the message that was waiting (as a rejected message would be), and marked as a redelivery.
    assert received == [(2, False), (1, True)]
    assert broker.restore_unacked(BROKER_URL) == 0


def test_restore_unacked_is_a_no_op_for_other_brokers() -> None:
    assert broker.restore_unacked("memory://") == 0


def test_queue_stats_redis_depth_and_age(redis_broker: redis.Redis) -> None:
    now_ms = time.time() * 1000
    events, maintenance, reads = _queue("events"), _queue("maintenance"), _queue("reads")
    _publish(BROKER_URL, events, {"n": 1}, headers={"sent_at_ms": int(now_ms - 30_000)})
    _publish(BROKER_URL, events, {"n": 2}, headers={"sent_at_ms": int(now_ms - 5_000)})
    _publish(BROKER_URL, events, {"n": 3}, headers={"sent_at_ms": int(now_ms)})
    _publish(BROKER_URL, maintenance, {"n": 4})  # a raw producer: no send time
    _publish(BROKER_URL, reads, {"n": 5}, headers={"sent_at_ms": int(now_ms - 10_000)})
    _publish(BROKER_URL, reads, {"n": 6}, priority=9, headers={"sent_at_ms": int(now_ms - 20_000)})
    assert redis_broker.llen("reads") == 1  # the other one is in a priority sub-queue

    stats = broker.queue_stats(BROKER_URL, ["events", "maintenance", "reads", "unused"])

    assert stats["events"].depth == 3
    assert stats["events"].oldest_age_s == pytest.approx(30, abs=3)
    assert stats["maintenance"] == broker.QueueStats(depth=1, oldest_age_s=None)
    assert stats["reads"].depth == 2
    assert stats["reads"].oldest_age_s == pytest.approx(20, abs=3)
    assert stats["unused"] == broker.QueueStats(depth=0, oldest_age_s=0.0)


def test_exporter_reports_broker_queues(redis_broker: redis.Redis) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from app.core.settings import load_settings
    from app.ops.exporter import StatsCollector
    from app.stores.runtime import Runtime

    now_ms = time.time() * 1000
    _publish(BROKER_URL, _queue("events"), {"n": 1}, headers={"sent_at_ms": int(now_ms - 12_000)})
    _publish(BROKER_URL, _queue("events"), {"n": 2}, headers={"sent_at_ms": int(now_ms)})
    _publish(BROKER_URL, _queue("reads"), {"n": 3})
    rt = Runtime(load_settings().model_copy(update={"celery_broker_url": BROKER_URL}))
    try:
        registry = CollectorRegistry()
        registry.register(StatsCollector(rt))
        lines = generate_latest(registry).decode().splitlines()
    finally:
        rt.close()

    def value(name: str, queue: str) -> float | None:
        prefix = f'{name}{{queue="{queue}"}} '
        found = [float(line.removeprefix(prefix)) for line in lines if line.startswith(prefix)]
        return found[0] if found else None

    assert value("usermetrics_broker_queue_depth", "events") == 2
    assert value("usermetrics_broker_queue_depth", "reads") == 1
    assert value("usermetrics_broker_queue_depth", "maintenance") == 0
    assert value("usermetrics_broker_oldest_message_age_seconds", "events") == pytest.approx(12, abs=3)
    assert value("usermetrics_broker_oldest_message_age_seconds", "maintenance") == 0
    assert value("usermetrics_broker_oldest_message_age_seconds", "reads") is None  # no send time: not known


def _rabbitmq_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            pass
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.connect()
        return True
    except Exception:
        return False


@pytest.fixture()
def amqp_queue() -> Iterator[Queue]:
    """A queue of this test's own on RabbitMQ, deleted with its exchange afterwards."""
    if not _rabbitmq_answers():
        pytest.skip("no RabbitMQ (guest/guest) on 127.0.0.1:5672")
    name = f"usermetrics-test-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name, durable=False)
    try:
        yield queue
    finally:
        with Connection(AMQP_URL) as conn:
            queue(conn.default_channel).delete()
            queue.exchange(conn.default_channel).delete()


def test_queue_stats_amqp_depth(amqp_queue: Queue) -> None:
    queue, name = amqp_queue, amqp_queue.name
    for n in range(3):
        _publish(AMQP_URL, queue, {"n": n}, headers={"sent_at_ms": int(time.time() * 1000)})
    deadline = time.monotonic() + 10
    while (stats := broker.queue_stats(AMQP_URL, [name, f"{name}-absent"]))[name].depth < 3:
        assert time.monotonic() < deadline, stats
        time.sleep(0.1)
    assert stats[name] == broker.QueueStats(depth=3, oldest_age_s=None)  # age: not knowable without consuming
    assert stats[f"{name}-absent"] == broker.QueueStats(depth=0, oldest_age_s=None)


def test_the_redis_transport_loses_a_message_taken_by_a_worker_killed_before_recording_it(
    redis_broker: redis.Redis,
) -> None:
    """The window the Redis broker cannot close (reliability docs): popped and not yet in ``unacked``, the message
    is nowhere, and no restore brings it back. RabbitMQ's test below is the setting that closes it."""
    events = _queue("events")
    _publish(BROKER_URL, events, {"n": 1})

    assert _killed_after_pop(BROKER_URL, "events") == -9

    assert redis_broker.llen("events") == 0
    assert redis_broker.hlen("unacked") == 0
    assert broker.restore_unacked(BROKER_URL) == 0  # lost: acknowledged by the broker to its producer, never run


def test_rabbitmq_redelivers_a_message_taken_by_a_worker_killed_before_its_ack(amqp_queue: Queue) -> None:
    queue, name = amqp_queue, amqp_queue.name
    _publish(AMQP_URL, queue, {"n": 1})

    assert _killed_after_pop(AMQP_URL, name) == -9

    # The broker kept it as delivered to a consumer; the consumer's connection closing gives it back.
    with Connection(AMQP_URL) as conn:
        deadline = time.monotonic() + 10
        while (message := queue(conn.default_channel).get(no_ack=False)) is None:
            assert time.monotonic() < deadline, "the message did not come back"
            time.sleep(0.1)
        assert message.payload == {"n": 1}
        assert message.delivery_info["redelivered"]
        message.ack()


def test_the_redis_transport_unprotects_a_redelivered_message_when_its_first_taker_acks(
    redis_broker: redis.Redis,
) -> None:
    """The Redis broker's second window (reliability docs): a message held unacknowledged past the visibility
    timeout is given to a second consumer under the same delivery tag; when the first one then acknowledges it,
    the ack deletes the second one's record too, and the message is in neither the queue nor ``unacked`` while
    the second consumer still works on it: killed then, it is lost. RabbitMQ has no visibility timeout."""
    events = _queue("events")
    _publish(BROKER_URL, events, {"n": 1})
    options = {"visibility_timeout": 1}
    with (
        Connection(BROKER_URL, transport_options=options) as first,
        Connection(BROKER_URL, transport_options=options) as second,
    ):
        taken = events(first.default_channel).get(no_ack=False)
        assert taken is not None and redis_broker.hlen("unacked") == 1
        time.sleep(1.5)  # past the visibility timeout: any consumer's periodic restore gives it back
        second.default_channel.qos.restore_visible(num=100)
        again = events(second.default_channel).get(no_ack=False)
        assert again is not None and again.delivery_tag == taken.delivery_tag
        assert redis_broker.hlen("unacked") == 1  # the second taker's record

        taken.ack()

        assert redis_broker.llen("events") == 0
        assert redis_broker.hlen("unacked") == 0  # the second taker holds it unprotected
        again.ack()
