"""Flushers take turns (server mode: one flusher per worker process on one buffer): a cycle whose batch is not
full runs while no other such cycle does, a full batch hands the turn on before its insert, and the turn of a
flusher that died passes on when its lease runs out. Two flushers of this test's own on a private Redis database,
the session's ClickHouse; turns on in both shapes (``take_turns=True``), since what is tested is the Redis lease
around a real cycle."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from app.core import constants as c
from app.core import failpoints
from app.core.events import Event, MetricType
from app.core.settings import Settings
from app.stores.runtime import Runtime
from app.write import buffer, flusher
from app.write.flusher import Flusher
from tests.stack import BASE_REDIS_URL, with_db

PRIVATE_REDIS = with_db(BASE_REDIS_URL, 11)
TURN_KEY = c.LOCK_KEY.format(name="flush-turn")


@pytest.fixture()
def rt(clean: Runtime, settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(
        settings.model_copy(update={"redis_url": PRIVATE_REDIS, "flush_max_events": 10}), clickhouse=clean.clickhouse
    )
    rt.redis.flushdb()
    buffer.ensure_group(rt.redis)
    try:
        yield rt
    finally:
        rt.redis.flushdb()
        rt.redis.close()


def _send(rt: Runtime, n: int) -> None:
    """``n`` messages of one follow each."""
    now = datetime.now(UTC)
    for i in range(n):
        event = Event(uuid.uuid4(), "User", 940_000 + i, 941_000 + i, 940_000 + i, MetricType.FOLLOW, 1, now)
        buffer.append(rt.redis, c.RECORD_FOLLOW, [event])


def _turn_held_at_insert(f: Flusher, rt: Runtime) -> list[bool]:
    """Flush once; for each insert, whether a flusher's turn was held as it began."""
    seen: list[bool] = []
    with failpoints.armed(failpoints.FLUSH_BEFORE_INSERT, lambda: seen.append(bool(rt.redis.exists(TURN_KEY)))):
        f.flush_once(block_ms=100)
    return seen


def test_a_flusher_waits_while_another_holds_the_turn_then_takes_what_waited(rt: Runtime) -> None:
    a = Flusher(rt, consumer="turn-a", take_turns=True)
    b = Flusher(rt, consumer="turn-b", take_turns=True)
    _send(rt, 3)
    # Given flusher A in the middle of a cycle (its turn held)
    assert a._turn is not None and a._turn.acquire(blocking=False)
    # When B looks for work: it waits for its turn, reads nothing and leaves the entries to A
    assert b.flush_once(block_ms=100).entries == 0
    assert rt.redis.xlen(c.EVENT_STREAM_KEY) == 3
    # Then once A hands the turn on, B's next cycle writes them, holding the turn through its insert
    a._turn.release()
    assert _turn_held_at_insert(b, rt) == [True]
    assert rt.redis.xlen(c.EVENT_STREAM_KEY) == 0
    assert not rt.redis.exists(TURN_KEY)  # and hands it on at the end of its cycle


def test_a_full_batch_hands_the_turn_on_before_its_insert(rt: Runtime) -> None:
    a = Flusher(rt, consumer="turn-a", take_turns=True)
    _send(rt, 12)  # more than FLUSH_MAX_EVENTS (10): a full batch
    assert _turn_held_at_insert(a, rt) == [False]  # another flusher could take the next batch and insert beside it
    _send(rt, 2)  # a trickle: the insert runs under the turn
    assert _turn_held_at_insert(a, rt) == [True]


def test_the_turn_of_a_flusher_that_died_passes_on_when_its_lease_runs_out(rt: Runtime) -> None:
    b = Flusher(rt, consumer="turn-b", take_turns=True)
    _send(rt, 2)
    # Given a turn held by a flusher that was killed mid-cycle (nobody will release it)
    rt.redis.set(TURN_KEY, "killed", px=int(flusher.TURN_LEASE_S * 1000))
    started = time.monotonic()
    written = 0
    while written < 2 and time.monotonic() - started < 5 * flusher.TURN_LEASE_S:
        written += b.flush_once(block_ms=100).entries
    # Then B writes the waiting entries once the lease has run out, not before
    assert written == 2
    assert time.monotonic() - started >= flusher.TURN_LEASE_S * 0.9


def test_flushers_take_turns_by_default_on_a_server_and_not_beside_an_embedded_engine(rt: Runtime) -> None:
    # The embedded engine has one flusher (its owner's); a server has one per worker process.
    assert (Flusher(rt, consumer="default")._turn is None) == rt.settings.clickhouse_embedded
