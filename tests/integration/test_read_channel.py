"""The read channel: a caller gets its answer from the owner's read server, or falls back to Celery when no server
listens; a handler's validation error stays one; a hostile or expired request is dropped and the server keeps
serving; stopping the server sends callers back to Celery at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.core.errors import TransientError, ValidationError
from app.stores import read_channel
from app.stores.read_channel import Channel, ReadServer
from app.stores.runtime import Runtime


def _double(n: int) -> int:
    return 2 * n


def _refuse(n: int) -> int:
    raise ValidationError(f"{n} is not a good number")


def _break() -> None:
    raise RuntimeError("the engine fell over")


HANDLERS: dict[str, Any] = {"double": _double, "refuse": _refuse, "break": _break}
# A channel of the tests' own: the session's worker serves the service's channel on the same Redis.
TEST = Channel("test-channel")
REQUESTS_KEY, SERVER_KEY = TEST.requests, TEST.server


def call(rt: Runtime, task: str, kwargs: dict[str, Any], timeout_s: float) -> tuple[bool, Any]:
    return read_channel.call(rt, task, kwargs, timeout_s, channel=TEST)


@pytest.fixture()
def server(clean: Runtime) -> Iterator[ReadServer]:
    srv = ReadServer(clean, HANDLERS, channel=TEST)
    srv.start()
    deadline = time.monotonic() + 5
    while not clean.redis.exists(SERVER_KEY) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield srv
    srv.stop()


def test_without_a_server_the_caller_is_sent_to_celery_and_nothing_is_queued(clean: Runtime) -> None:
    assert call(clean, "double", {"n": 2}, 1.0) == (False, None)
    assert clean.redis.llen(REQUESTS_KEY) == 0


def test_answers_and_errors_come_back_to_the_caller(clean: Runtime, server: ReadServer) -> None:
    assert call(clean, "double", {"n": 21}, 5.0) == (True, 42)
    with pytest.raises(ValidationError, match="7 is not a good number"):
        call(clean, "refuse", {"n": 7}, 5.0)
    with pytest.raises(TransientError, match="the engine fell over"):
        call(clean, "break", {}, 5.0)
    with pytest.raises(ValidationError, match="no read named 'nothing'"):
        call(clean, "nothing", {}, 5.0)
    # Every reply list was consumed or expires; the requests list expires when idle
    assert not [k for k in clean.redis.scan_iter(TEST.reply("*")) if clean.redis.ttl(k) == -1]
    assert clean.redis.ttl(REQUESTS_KEY) in (-2, *range(1, read_channel.REQUESTS_TTL_S + 1))


def test_hostile_and_expired_requests_are_dropped_and_serving_goes_on(clean: Runtime, server: ReadServer) -> None:
    clean.redis.lpush(REQUESTS_KEY, "not json", '{"task": "double"}', "[1, 2]")
    expired = '{"id": "late", "task": "double", "kwargs": {"n": 1}, "deadline": 1}'
    clean.redis.lpush(REQUESTS_KEY, expired)
    assert call(clean, "double", {"n": 5}, 5.0) == (True, 10)
    assert clean.redis.llen(REQUESTS_KEY) == 0
    assert not clean.redis.exists(TEST.reply("late"))  # its caller had given up: no answer was written


def test_a_stopped_server_sends_callers_to_celery_at_once(clean: Runtime, server: ReadServer) -> None:
    assert call(clean, "double", {"n": 1}, 5.0) == (True, 2)
    server.stop()
    started = time.monotonic()
    assert call(clean, "double", {"n": 1}, 5.0) == (False, None)
    assert time.monotonic() - started < 1.0


def test_a_server_that_died_is_not_asked_once_its_heartbeat_expires(clean: Runtime) -> None:
    # A heartbeat left by a killed owner: callers wait for it only until the key expires, then go to Celery
    clean.redis.set(SERVER_KEY, 12345, px=300)
    with pytest.raises(TransientError, match="did not answer double"):
        call(clean, "double", {"n": 1}, 0.5)
    time.sleep(0.4)
    assert call(clean, "double", {"n": 1}, 0.5) == (False, None)


def test_a_request_waiting_when_the_server_stops_is_sent_to_celery_at_once(clean: Runtime) -> None:
    """A caller pushed its request while the heartbeat stood, and no thread took it before the stop (here: a server
    whose threads never ran). Stopping answers it with "go to Celery" instead of leaving it to its timeout."""
    srv = ReadServer(clean, HANDLERS, channel=TEST)
    clean.redis.set(SERVER_KEY, 12345, ex=30)  # as a serving thread leaves it
    results: list[tuple[bool, Any]] = []
    caller = threading.Thread(target=lambda: results.append(call(clean, "double", {"n": 3}, 10.0)))
    started = time.monotonic()
    caller.start()
    deadline = time.monotonic() + 5
    while not clean.redis.llen(REQUESTS_KEY) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert clean.redis.llen(REQUESTS_KEY) == 1
    srv.stop()
    caller.join(10)
    assert results == [(False, None)]
    assert time.monotonic() - started < 5.0
    assert not clean.redis.exists(SERVER_KEY) and clean.redis.llen(REQUESTS_KEY) == 0
