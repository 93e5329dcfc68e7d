"""Task events of the event tasks: a sampled share of their messages sends them (``EVENT_TASK_EVENTS_SAMPLE``).

Given a worker subprocess that sends task events, with a sample of 1, 0 or 0.3, and a Celery event receiver on its
broker (what Flower listens with), when every event task and a maintenance job are sent with known task ids, then
a sampled message's task-received (with its arguments), task-started and task-succeeded all arrive, a message not
sampled sends none, and the job sends its events whatever the sample. The sample is exactly the messages whose
ids pass ``tasks.base.sampled``.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery.events import EventReceiver

from app.core import constants as c
from app.core.paths import REPO
from app.core.settings import Settings
from app.local import process
from app.stores.broker import client_app
from bench.harness import worker_argv
from tasks.base import sampled
from tests.stack import BASE_REDIS_URL, ROOT, process_env, with_db

pytestmark = pytest.mark.e2e

CACHE_URL = with_db(BASE_REDIS_URL, 4)
BROKER_URL = with_db(BASE_REDIS_URL, 9)  # a broker of its own: no other worker of the session takes its messages
KWARGS: dict[str, dict[str, Any]] = {
    c.RECORD_FOLLOW: {"follower_id": 1, "user_id": 2},
    c.RECORD_UPLOAD: {"user_id": 1, "content_type": "Image", "entity_id": 10},
    c.SET_REACTION: {"user_id": 3, "image_id": 10, "reactions": 9},
    c.RECORD_ENTITY_METRIC: {
        "entity_type": "Image",
        "entity_id": 10,
        "metric_type": "Download",
        "metric_value": 1,
        "user_id": 3,
        "owner_id": 1,
    },
    c.RECORD_EVENTS: {"events": [{"type": c.RECORD_FOLLOW, "follower_id": 3, "user_id": 2}]},
}
PER_TASK = 8
LIFECYCLE = {"task-received", "task-started", "task-succeeded"}


class Receiver:
    """A Celery event receiver on the test broker, in a thread, keeping one worker's events by task id."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.app = client_app(Settings(CELERY_BROKER_URL=BROKER_URL, REDIS_URL=CACHE_URL))
        self.by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.online = threading.Event()
        self.lock = threading.Lock()
        self.conn = self.app.connection_for_read()
        self.receiver = EventReceiver(self.conn, handlers={"*": self._on_event}, app=self.app)
        self.thread = threading.Thread(target=self.receiver.capture, kwargs={"wakeup": False}, daemon=True)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("hostname") != self.hostname:
            return
        if event["type"] == "worker-online":
            self.online.set()
        elif event["type"].startswith("task-"):
            with self.lock:
                self.by_task[event["uuid"]].append(event)

    def types(self, task_id: str) -> set[str]:
        with self.lock:
            return {e["type"] for e in self.by_task.get(task_id, [])}

    def received(self, task_id: str) -> dict[str, Any]:
        with self.lock:
            return next(e for e in self.by_task[task_id] if e["type"] == "task-received")

    def start(self) -> None:
        self.thread.start()
        time.sleep(0.5)  # subscribed before the worker says it is online

    def stop(self) -> None:
        self.receiver.should_stop = True
        self.thread.join(10)
        self.conn.release()


def _start_worker(hostname: str, share: float) -> subprocess.Popen[bytes]:
    name = f"task-events-{int(share * 100)}"
    env = process_env(name)
    env.update(
        DATA_DIR=str(ROOT / name),
        REDIS_URL=CACHE_URL,
        CELERY_BROKER_URL=BROKER_URL,
        TASK_EVENTS="true",
        EVENT_TASK_EVENTS_SAMPLE=str(share),
        METRICS_PORT="0",
        LOG_LEVEL="WARNING",
    )
    env.pop("EVENT_TASK_EVENTS", None)
    argv = worker_argv(hostname, concurrency=2) + ["--without-mingle", "--without-gossip"]
    return subprocess.Popen(argv, env=env, cwd=REPO, start_new_session=True)  # noqa: S603 - fixed argv


def _stop(proc: subprocess.Popen[bytes]) -> None:
    process.stop(proc.pid, 60)  # the process group: SIGTERM, then SIGKILL
    proc.wait()


def _wait(check: Any, what: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert proc.poll() is None, f"the worker exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.1)


@pytest.fixture()
def brokers() -> Iterator[None]:
    for url in (BROKER_URL, CACHE_URL):
        redis.Redis.from_url(url).flushdb()
    yield
    for url in (BROKER_URL, CACHE_URL):
        redis.Redis.from_url(url).flushdb()


@pytest.mark.parametrize("share", [1.0, 0.0, 0.3])
def test_event_tasks_send_task_events_for_their_sampled_share(brokers: None, share: float) -> None:
    # Given: a receiver, then a worker sending task events with this sample.
    hostname = f"sampling-{uuid.uuid4().hex[:8]}@test"
    receiver = Receiver(hostname)
    receiver.start()
    worker = _start_worker(hostname, share)
    try:
        _wait(receiver.online.is_set, "the worker's worker-online event", worker, 120)

        # When: every event task is sent PER_TASK times with known ids, and a maintenance job once.
        ids = {f"{task}-{i}-{uuid.UUID(int=i * 7919 + len(task))}": task for task in KWARGS for i in range(PER_TASK)}
        job_id = f"job-{uuid.uuid4()}"
        for task_id, task in ids.items():
            receiver.app.send_task(task, kwargs=KWARGS[task], task_id=task_id)
        receiver.app.send_task(c.CHECK_EVENT_BUFFER, task_id=job_id)
        expected = {task_id for task_id in ids if sampled(task_id, share)}

        # Then: the job's and every sampled message's lifecycle arrive; nothing more after the queues drained.
        broker = redis.Redis.from_url(BROKER_URL)

        def done() -> bool:
            queued = broker.llen(c.EVENTS_QUEUE) + broker.llen(c.MAINTENANCE_QUEUE) + broker.hlen("unacked")
            complete = all("task-succeeded" in receiver.types(t) for t in [job_id, *expected])
            return queued == 0 and complete

        _wait(done, "every message to run and its expected events to arrive", worker, 120)
        time.sleep(1.0)  # room for events that should not come

        assert LIFECYCLE <= receiver.types(job_id), "a job's events do not depend on the event tasks' sample"
        assert receiver.received(job_id)["name"] == c.CHECK_EVENT_BUFFER
        for task_id, task in ids.items():
            if task_id in expected:
                assert LIFECYCLE <= receiver.types(task_id), task_id
                event = receiver.received(task_id)
                assert event["name"] == task
                assert next(iter(KWARGS[task])) in event["kwargs"]  # the arguments, as Flower shows them
            else:
                assert receiver.types(task_id) == set(), f"{task_id} is not sampled, yet sent task events"
        with_events = {t for t in ids if receiver.types(t)}
        assert with_events == expected
        if share == 1.0:
            assert with_events == set(ids)
        elif share == 0.0:
            assert with_events == set()
        else:
            assert 0 < len(with_events) < len(ids)
    finally:
        _stop(worker)
        receiver.stop()
