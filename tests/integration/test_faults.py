"""Fault injection against the running worker: hostile messages, queue isolation, ClickHouse capacity and data
errors, reused event ids. Each test injects the fault with the real engines (a message the broker really
delivers; a ClickHouse table setting or constraint that makes the real engine refuse) and shows that the worker
stays up, every good event lands exactly once and every bad input is a dead letter with its reason."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import redis

from app.caches import metrics_cache
from app.caches.metrics_cache import metrics_key
from app.core import constants as c
from app.read.metrics_service import UserMetricsQueryService
from app.stores.runtime import Runtime
from app.write import buffer, deadletters
from app.write.excluded import list_excluded
from tests.raw import publish_raw
from tests.stack import BROKER_IS_REDIS, BROKER_URL, prime, wait_drained, wait_until, worker_report

pytestmark = pytest.mark.usefixtures("worker")


def wait_letters(rt: Runtime, n: int, timeout_s: float = 15.0) -> list[deadletters.DeadLetter]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        letters = deadletters.list_letters(rt.redis, limit=1000)
        if len(letters) >= n:
            return letters
        time.sleep(0.05)
    raise AssertionError(f"expected {n} dead letters, got {deadletters.list_letters(rt.redis)}\n{worker_report()}")


def followers(rt: Runtime, user: int) -> int:
    cached = metrics_cache.read(rt.redis, [user])[user]
    assert cached is not None, f"user {user} is not cached"
    return cached.follower_count


def distinct_events(rt: Runtime) -> int:
    return int(rt.clickhouse.rows("SELECT uniqExact(eventId) FROM entityMetricEvents")[0][0])


# Bodies with valid headers (task record_follow) that are not Celery's [args, kwargs, embed] triple.
POISON_BODIES = [
    b"[1]",
    b'{"follower_id": 1, "user_id": 2}',
    b"[[], [1, 2], {}]",
    b"[null, null, {}]",
    b'"text"',
    b"42",
    b"null",
    b"[]",
    b'[[], {"follower_id": 1, "user_id": 2}, 5]',
    b'[[], {"follower_id": 1, "user_id": 2}]',
]
# Items pushed straight onto the broker's list, as a broken producer that bypasses kombu would.
GARBAGE_ITEMS = [b"\xff\xfe not json", b"42", b'{"body": "x"}', b'{"properties": {}}', b"[1, 2, 3]"]


def test_poison_bodies_and_garbage_items_become_dead_letters_and_good_events_land_once(clean, producer):  # type: ignore[no-untyped-def]
    # Given a cached user and a stream of good follows interleaved with hostile messages
    prime(clean, 900)
    good = 0
    for body in POISON_BODIES:
        publish_raw("record_follow", body=body, content_type="application/json")
        producer.record_follow(10_000 + good, 900)
        good += 1
    # Items only a Redis broker can hold (RabbitMQ delivers whole AMQP messages, whose bodies are covered above).
    garbage = GARBAGE_ITEMS if BROKER_IS_REDIS else []
    for item in garbage:
        redis.Redis.from_url(BROKER_URL).lpush(c.EVENTS_QUEUE, item)
        producer.record_follow(10_000 + good, 900)
        good += 1
    # When the worker has seen them all
    letters = wait_letters(clean, len(POISON_BODIES) + len(garbage))
    wait_drained(clean)
    # Then each bad one is a dead letter with its reason and raw body, and every good one counted once
    assert len(letters) == len(POISON_BODIES) + len(garbage)
    raw = {str(d.kwargs.get("raw_body")) for d in letters}
    for body in POISON_BODIES:
        assert body.decode() in raw, body
    assert all(d.reason for d in letters)
    assert sum(d.error == "RejectedMessage" and "message body" in d.reason for d in letters) == len(POISON_BODIES)
    assert sum(d.error == "UndeliverableItem" for d in letters) == len(garbage)
    assert followers(clean, 900) == good
    assert distinct_events(clean) == good


def test_each_queue_runs_only_its_own_tasks(clean, producer):  # type: ignore[no-untyped-def]
    # Given an admin task, a job, Celery's cleanup and an event task, each sent to a queue it does not belong to
    publish_raw(c.MANAGE_EXCLUDED_USERS, {"action": "add", "user_ids": [5]}, queue=c.EVENTS_QUEUE)
    publish_raw(c.RECOMPUTE_RANKS, {}, queue=c.EVENTS_QUEUE)
    publish_raw("celery.backend_cleanup", {}, queue=c.EVENTS_QUEUE)
    publish_raw(c.RECORD_FOLLOW, {"follower_id": 1, "user_id": 2}, queue=c.MAINTENANCE_QUEUE)
    publish_raw(c.RECORD_FOLLOW, {"follower_id": 1, "user_id": 2}, queue=c.READS_QUEUE)
    letters = wait_letters(clean, 5)
    wait_drained(clean)
    # Then none ran: each is a dead letter naming the queue, and nothing changed
    assert all("is not accepted on queue" in d.reason for d in letters), [d.reason for d in letters]
    assert list_excluded(clean.clickhouse) == []
    assert distinct_events(clean) == 0


def test_oversized_message_is_dead_lettered_with_a_capped_body(clean):  # type: ignore[no-untyped-def]
    publish_raw("record_follow", {"follower_id": 1, "user_id": 2, "junk": "x" * 3_000_000})
    (letter,) = wait_letters(clean, 1)
    stored = clean.redis.xrange(c.DEAD_LETTER_KEY)[0][1]["kwargs"]
    assert len(stored) < c.DEAD_LETTER_MAX_BODY_BYTES + 1000
    assert letter.kwargs["truncated"] is True and letter.kwargs["size_bytes"] > 3_000_000
    assert len(letter.reason) <= c.DEAD_LETTER_MAX_REASON_CHARS + 40


@contextmanager
def clickhouse_refuses_inserts(rt: Runtime) -> Iterator[None]:
    """The real engine answers every insert into the event log with TOO_MANY_PARTS (a capacity error)."""
    rt.clickhouse.command(
        "INSERT INTO entityMetricEvents (eventId, entityType, entityId, userId, ownerId, metricType, metricValue, "
        "createdAt) VALUES (generateUUIDv4(), 'Model', 1, 1, 1, 'View', 1, now64(3))"
    )
    rt.clickhouse.command("ALTER TABLE entityMetricEvents MODIFY SETTING parts_to_throw_insert = 1")
    try:
        yield
    finally:
        rt.clickhouse.command("ALTER TABLE entityMetricEvents RESET SETTING parts_to_throw_insert")


@contextmanager
def clickhouse_out_of_memory(rt: Runtime) -> Iterator[None]:
    """Every query of this process fails with MEMORY_LIMIT_EXCEEDED (the engine's own limit, set to 1 byte)."""
    rt.clickhouse.client.set_client_setting("max_memory_usage", 1)
    try:
        yield
    finally:
        rt.clickhouse.client.set_client_setting("max_memory_usage", 0)


def counter(rt: Runtime, name: str) -> int:
    return int(rt.redis.hget(c.COUNTER_KEY, name) or 0)


def test_clickhouse_capacity_errors_keep_events_buffered_and_reads_stale_then_recover(clean, producer):  # type: ignore[no-untyped-def]
    # Given a user with 3 followers whose metrics were read once (cached, and kept as the last known copy)
    for i in range(3):
        producer.record_follow(20_100 + i, 920)
    wait_drained(clean)
    prime(clean, 920)
    with clickhouse_refuses_inserts(clean):
        # When ClickHouse refuses every insert (too many parts: a capacity error)
        for i in range(12):
            producer.record_follow(20_000 + i, 920)
        wait_until(lambda: counter(clean, "flush_failures_total") >= 2, "two failed flushes")
        # Then the events wait in the buffer (pending, not dead-lettered) while the flusher backs off
        assert deadletters.count(clean.redis) == 0
        assert buffer.stats(clean.redis).pending > 0
        with clickhouse_out_of_memory(clean):
            # And while every query fails for lack of memory, a reader whose cache expired gets the last known
            # values marked stale instead of zeros or an error
            clean.redis.delete(metrics_key(920))
            got = UserMetricsQueryService(clean).get_user_metrics([920])
            assert got.stale == {920} and got.unavailable == set()
            assert got[920].follower_count == 3
    # When ClickHouse has room again, every event lands exactly once and the cache catches up
    wait_drained(clean, timeout_s=60)
    prime(clean, 920)
    assert followers(clean, 920) == 15
    assert deadletters.count(clean.redis) == 0
    assert distinct_events(clean) == 15 + 1  # and the one event the injection wrote


def test_a_batch_with_data_clickhouse_refuses_dead_letters_only_that_entry(clean, producer):  # type: ignore[no-untyped-def]
    clean.clickhouse.command("ALTER TABLE entityMetricEvents ADD CONSTRAINT injectedNo666 CHECK entityId != 666")
    try:
        prime(clean, 930)
        for i in range(5):
            producer.record_follow(30_000 + i, 930)
        producer.record_entity_metric("Model", 666, "Download", 1, 7, owner_id=930)
        for i in range(5, 10):
            producer.record_follow(30_000 + i, 930)
        (letter,) = wait_letters(clean, 1)
        wait_drained(clean)
    finally:
        clean.clickhouse.command("ALTER TABLE entityMetricEvents DROP CONSTRAINT injectedNo666")
    assert "VIOLATED_CONSTRAINT" in letter.reason and letter.task == c.BUFFERED_EVENTS_TASK
    assert letter.kwargs["events"][0]["entityId"] == 666
    assert followers(clean, 930) == 10
    assert distinct_events(clean) == 10


def test_a_reused_event_id_with_another_payload_is_refused_first_wins(clean, producer):  # type: ignore[no-untyped-def]
    prime(clean, 940, 941)
    reused = str(uuid.uuid4())
    at = datetime.now(UTC).isoformat()
    producer.send(c.RECORD_FOLLOW, follower_id=1, user_id=940, event_id=reused, occurred_at=at)
    wait_drained(clean)
    # Later: the same id for another follow, and inside one batch, the same id twice with two meanings
    producer.send(c.RECORD_FOLLOW, follower_id=1, user_id=941, event_id=reused, occurred_at=at)
    twin = str(uuid.uuid4())
    producer.record_events(
        [
            {"type": "record_follow", "follower_id": 2, "user_id": 941, "event_id": twin},
            {"type": "record_follow", "follower_id": 3, "user_id": 941, "event_id": twin},
            {"type": "record_follow", "follower_id": 4, "user_id": 941},
        ]
    )
    # A redelivery of the first message, same payload, is harmless as always
    producer.send(c.RECORD_FOLLOW, follower_id=1, user_id=940, event_id=reused, occurred_at=at)
    letters = wait_letters(clean, 2)
    wait_drained(clean)
    assert {d.error for d in letters} == {"EventIdReused"}
    assert all("first one wins" in d.reason for d in letters)
    assert followers(clean, 940) == 1
    assert followers(clean, 941) == 2  # follower 2 (first use of the twin id) and follower 4
    rows = clean.clickhouse.rows(
        "SELECT DISTINCT userId, entityId FROM entityMetricEvents WHERE eventId = {i:UUID}", {"i": reused}
    )
    assert rows == [(1, 940)]


def test_dead_letters_list_json_is_strict(clean, run_cli):  # type: ignore[no-untyped-def]
    publish_raw("record_follow", body=b'[[], {"follower_id": NaN, "user_id": Infinity}, {}]')
    wait_letters(clean, 1)
    out = run_cli("dead-letters", "list", "--json")
    assert out.exit_code == 0, out.output
    json.loads(out.output, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
