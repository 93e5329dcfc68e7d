"""Transient failures: ClickHouse unreachable. Events stay buffered, are retried with backoff, and after
FLUSH_MAX_DELIVERIES attempts go to the dead letters, from where a replay puts them back. Nothing is lost."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from app.core import constants as c
from app.core.errors import TransientError
from app.core.events import Event, MetricType
from app.core.settings import Settings
from app.stores.runtime import Runtime
from app.write import buffer, deadletters
from app.write.flusher import Flusher
from tests.stack import BASE_REDIS_URL, with_db

ISOLATED_REDIS = with_db(BASE_REDIS_URL, 11)  # not the database the test worker's flusher drains


def _event() -> Event:
    return Event(uuid.uuid4(), "User", 2, 1, 2, MetricType.FOLLOW, 1, datetime.now(UTC))


@pytest.fixture()
def unreachable(settings: Settings) -> Runtime:
    cfg = settings.model_copy(
        update={
            "clickhouse_url": "http://127.0.0.1:9/usermetrics",
            "redis_url": ISOLATED_REDIS,
            "flush_max_deliveries": 3,
            "clickhouse_timeout_s": 1.0,
        }
    )
    rt = Runtime(cfg)
    rt.redis.flushdb()
    return rt


def test_clickhouse_down_keeps_events_then_dead_letters_them_replayably(
    unreachable: Runtime, monkeypatch, run_cli
) -> None:  # type: ignore[no-untyped-def]
    r = unreachable.redis
    buffer.ensure_group(r)
    event = _event()
    buffer.append(r, "record_follow", [event])
    flusher = Flusher(unreachable, consumer="t")
    # Each attempt fails as transient and leaves the entry pending (not lost, not acknowledged).
    for _ in range(3):
        with pytest.raises(TransientError):
            flusher.flush_once(block_ms=10)
        assert buffer.stats(r).pending == 1
    # Past the limit the entry becomes a dead letter with its reason and the events themselves.
    flusher.flush_once(block_ms=10)
    letters = deadletters.list_letters(r)
    assert len(letters) == 1 and letters[0].task == c.BUFFERED_EVENTS_TASK
    assert "not written after 3 attempts" in letters[0].reason
    assert letters[0].kwargs["events"][0]["eventId"] == str(event.event_id)
    assert buffer.stats(r).pending == 0 and r.xlen(c.EVENT_STREAM_KEY) == 0

    # Replay puts the events back into the buffer, unchanged.
    monkeypatch.setenv("REDIS_URL", ISOLATED_REDIS)
    result = run_cli("dead-letters", "replay")
    assert result.exit_code == 0, result.output
    entries = buffer.read(r, "t2", 10, 10)
    assert [e.event_id for entry in entries for e in entry.events] == [event.event_id]
    assert deadletters.count(r) == 0


def test_event_tasks_declare_bounded_backoff_with_jitter(celery_app) -> None:  # type: ignore[no-untyped-def]
    for name in c.EVENT_TASKS:
        task = celery_app.tasks[name]
        assert task.acks_late and task.reject_on_worker_lost
        assert task.retry_backoff and task.retry_jitter and task.max_retries is not None
        assert TransientError in task.autoretry_for
