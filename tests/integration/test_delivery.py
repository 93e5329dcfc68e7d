"""Messages as the broker really delivers them: raw producers, redeliveries, malformed input, dead letters."""

from __future__ import annotations

import json
import threading
import time

import pytest

from app.caches import metrics_cache
from app.write import deadletters
from tests.raw import publish_raw
from tests.stack import prime, wait_drained

pytestmark = pytest.mark.usefixtures("worker")


def wait_dead_letters(rt, n: int, timeout_s: float = 10.0) -> list[deadletters.DeadLetter]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        letters = deadletters.list_letters(rt.redis)
        if len(letters) >= n:
            return letters
        time.sleep(0.05)
    raise AssertionError(f"expected {n} dead letters, have {deadletters.list_letters(rt.redis)}")


def test_raw_message_without_ids_is_processed_like_the_helpers(clean, producer):  # type: ignore[no-untyped-def]
    prime(clean, 42)
    publish_raw("record_follow", {"follower_id": 41, "user_id": 42})
    producer.record_follow(43, 42)
    wait_drained(clean)
    assert metrics_cache.read(clean.redis, [42])[42].follower_count == 2  # type: ignore[union-attr]
    ids = clean.clickhouse.rows("SELECT count(DISTINCT eventId) FROM entityMetricEvents")
    assert ids == [(2,)]


def test_broker_redelivery_of_a_raw_message_counts_once(clean):  # type: ignore[no-untyped-def]
    # Given a raw message with no event_id or occurred_at, delivered twice with the same task id
    prime(clean, 52)
    publish_raw("record_follow", {"follower_id": 51, "user_id": 52}, task_id="4b1c0e0a-0000-4000-8000-000000000001")
    wait_drained(clean)
    publish_raw("record_follow", {"follower_id": 51, "user_id": 52}, task_id="4b1c0e0a-0000-4000-8000-000000000001")
    wait_drained(clean)
    # Then one event id, one receive time, one follower
    rows = clean.clickhouse.rows("SELECT DISTINCT eventId, createdAt FROM entityMetricEvents")
    assert len(rows) == 1
    assert metrics_cache.read(clean.redis, [52])[52].follower_count == 1  # type: ignore[union-attr]


def test_malformed_messages_are_dead_lettered_and_the_worker_survives(clean, producer):  # type: ignore[no-untyped-def]
    publish_raw("record_follow", body=b"{not json", content_type="application/json")
    publish_raw("record_follow", body=b"\x80\x04K\x01.", content_type="application/x-python-serialize")
    publish_raw("no_such_task", {"x": 1})
    publish_raw("record_follow", {"follower_id": "abc", "user_id": 2})
    publish_raw("record_follow", {"follower_id": 9, "user_id": 9})
    publish_raw("record_follow", body=[[1, 2], {}, {}])
    letters = wait_dead_letters(clean, 6)
    reasons = " | ".join(f"{d.task}: {d.reason}" for d in letters)
    assert "decode" in reasons
    assert "unknown task" in reasons
    assert "follower_id" in reasons and "valid integer" in reasons
    assert "cannot follow themselves" in reasons
    assert "keyword arguments only" in reasons
    assert all(d.reason for d in letters)
    # The worker is alive and still processes good messages.
    prime(clean, 62)
    producer.record_follow(61, 62)
    wait_drained(clean)
    assert metrics_cache.read(clean.redis, [62])[62].follower_count == 1  # type: ignore[union-attr]
    assert 0 < clean.redis.ttl("deadletters")


def test_dead_letter_cli_list_replay_purge(clean, run_cli):  # type: ignore[no-untyped-def]
    publish_raw("record_follow", {"follower_id": 0, "user_id": 2})
    publish_raw("record_follow", {"follower_id": 3, "user_id": 4, "is_follow": True})
    wait_drained(clean)
    publish_raw("no_such_task", {})
    wait_dead_letters(clean, 2)
    listed = run_cli("dead-letters", "list", "--json")
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    assert data["total"] == 2
    # Replay goes through the producer's validation: both are still invalid, both stay.
    replay = run_cli("dead-letters", "replay")
    assert replay.exit_code == 1
    assert deadletters.count(clean.redis) == 2
    purge = run_cli("dead-letters", "purge", "--all")
    assert purge.exit_code == 0 and deadletters.count(clean.redis) == 0


def test_replay_of_a_fixed_dead_letter_enqueues_it(clean, run_cli):  # type: ignore[no-untyped-def]
    # Given a dead letter whose payload is valid now (e.g. it failed for a reason since fixed)
    prime(clean, 72)
    deadletters.record(
        clean.redis,
        task="record_follow",
        reason="ClickHouse down",
        error="OperationalError",
        task_id="t1",
        kwargs={"follower_id": 71, "user_id": 72},
    )
    result = run_cli("dead-letters", "replay")
    assert result.exit_code == 0, result.output
    wait_drained(clean)
    assert deadletters.count(clean.redis) == 0
    assert metrics_cache.read(clean.redis, [72])[72].follower_count == 1  # type: ignore[union-attr]


def test_the_session_runs_one_in_process_worker(worker) -> None:  # type: ignore[no-untyped-def]
    # One worker, so one flusher and one refresher, however many test directories asked for it.
    names = [t.name for t in threading.enumerate()]
    assert sum(n.startswith("flusher-") for n in names) == 1, names
    assert names.count("metrics-refresher") == 1, names
