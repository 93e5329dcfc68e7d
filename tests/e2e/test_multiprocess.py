"""The Procfile's shape under test: two prefork worker processes (concurrency 2 each) on ``events`` and ``reads``,
a maintenance worker (prefork, 2) and two beats, on one ClickHouse server and one Redis, with RabbitMQ as the broker
when it answers. The flushers of all worker processes share one buffer; every number served still equals the
oracle's, and every beat job runs at most once per tick across the processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection, Exchange, Queue

from app.caches.reactions_cache import flags_key
from app.client import EventProducer
from app.core import constants as c
from app.core import failpoints, keys
from app.core.paths import REPO
from app.core.settings import Settings
from app.local import redis_cluster
from app.read.metrics_service import UserMetricsQueryService
from app.stores.runtime import Runtime
from bench.oracle import Oracle, events_of
from tasks.config import celery_config
from tests.integration.test_write_properties import (
    IMAGES,
    OWNER,
    USERS,
    an_event,
    assert_computed_and_cached_match,
)
from tests.properties import examples
from tests.stack import (
    AMQP_URL,
    BASE_REDIS_URL,
    BROKER_URL,
    REDIS_CLUSTER,
    ROOT,
    SERVER_MODE,
    merge_the_log,
    process_env,
    rabbitmq_up,
    wait_until,
    wipe_clickhouse,
    with_db,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not SERVER_MODE, reason="several worker processes need a ClickHouse server"),
]

CELERY = [sys.executable, "-m", "celery", "-A", "tasks.celery_app:celery_app"]
TICK_S = 2


def shape_broker() -> str:
    """RabbitMQ's default vhost unless the session's own worker consumes it; else a Redis database of its own."""
    if rabbitmq_up() and BROKER_URL != AMQP_URL:
        return AMQP_URL
    return with_db(BASE_REDIS_URL, 8)


def purge(broker: str) -> None:
    with Connection(broker) as conn:
        for name in (c.EVENTS_QUEUE, c.MAINTENANCE_QUEUE, c.READS_QUEUE):
            queue = Queue(name, Exchange(name, type="direct"), routing_key=name)(conn.default_channel)
            queue.declare()
            queue.purge()


@dataclass
class Shape:
    env: dict[str, str]
    rt: Runtime
    app: Celery
    procs: dict[str, subprocess.Popen[bytes]]

    @property
    def producer(self) -> EventProducer:
        return EventProducer(self.app)

    def start(self, name: str, argv: list[str]) -> None:
        log = open(ROOT / f"procfile-{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(  # noqa: S603
            argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def workers_answering(self) -> int:
        return len(self.app.control.ping(timeout=1.0) or [])

    def settled(self) -> bool:
        r = self.rt.redis
        return not r.xlen(c.EVENT_STREAM_KEY) and not r.zcard(c.METRICS_DIRTY_KEY)


def worker_argv(name: str, queues: str) -> list[str]:
    return [*CELERY, "worker", "-Q", queues, "--pool", "prefork", "--concurrency", "2", "--hostname", f"{name}@%h"]


@pytest.fixture(scope="module")
def shape() -> Iterator[Shape]:
    """The Procfile's processes on a cache of their own: a database of the session's Redis, or, when the session's
    cache is a Redis Cluster, a local Redis Cluster of their own (the acceptance paths in cluster mode)."""
    if not REDIS_CLUSTER:
        yield from _shape(with_db(BASE_REDIS_URL, 9))
        return
    cluster = Settings(DATA_DIR=str(ROOT / "procfile-redis-cluster"))
    try:
        yield from _shape(redis_cluster.start(cluster))
    finally:
        redis_cluster.stop(cluster)


def _shape(cache_url: str) -> Iterator[Shape]:
    broker = shape_broker()
    purge(broker)
    env = process_env("procfile")
    env.update(
        REDIS_URL=cache_url,
        CELERY_BROKER_URL=broker,
        DATA_DIR=str(ROOT / "procfile"),
        LOG_LEVEL="WARNING",
        METRICS_PORT="0",
        ENGAGEMENT_INTERVAL_S=str(TICK_S),
        ENGAGEMENT_FULL_EVERY="1",
        RANKS_INTERVAL_S=str(TICK_S),
        REFRESH_INTERVAL_S=str(TICK_S),
        RECONCILE_INTERVAL_S=str(TICK_S),
        SNAPSHOT_INTERVAL_S=str(TICK_S),
        PEERS_INTERVAL_S=str(TICK_S),
        ACHIEVEMENTS_INTERVAL_S=str(TICK_S),
        BUFFER_CHECK_INTERVAL_S=str(TICK_S),
        FAILPOINTS=failpoints.JOB_RUNNING,  # held from the test through Redis (app/core/failpoints.py)
    )
    cfg = Settings(
        CLICKHOUSE_URL=env["CLICKHOUSE_URL"], REDIS_URL=cache_url, CELERY_BROKER_URL=broker, DATA_DIR=env["DATA_DIR"]
    )
    app = Celery("procfile-producer")
    app.config_from_object(celery_config(cfg))
    rt = Runtime(cfg)
    rt.redis.flushdb()
    migrated = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app", "migrate"], env=env, cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert migrated.returncode == 0, migrated.stderr
    s = Shape(env, rt, app, {})
    s.start("worker1", worker_argv("worker1", f"{c.EVENTS_QUEUE},{c.READS_QUEUE}"))
    s.start("worker2", worker_argv("worker2", f"{c.EVENTS_QUEUE},{c.READS_QUEUE}"))
    s.start("maintenance", worker_argv("maintenance", c.MAINTENANCE_QUEUE))
    try:
        try:
            wait_until(lambda: s.workers_answering() >= 3, "three worker processes", 90)
        except AssertionError as exc:
            logs = {n: (ROOT / f"procfile-{n}.log").read_text()[-2000:] for n in s.procs}
            raise AssertionError(f"{exc}; worker logs: {logs}") from exc
        yield s
    finally:
        for name in list(s.procs):
            s.stop(name)
        app.close()
        rt.close()


def reset(shape: Shape) -> None:
    wait_until(shape.settled, "the previous example to settle", 60)
    shape.rt.redis.flushdb()
    wipe_clickhouse(shape.rt)


def settled_at_the_oracle(shape: Shape, expected: list[Any], timeout_s: float = 60) -> Oracle:
    """Wait for every event and for the caches to settle; then every computed and cached number of ``USERS`` is
    the oracle's, and no stray event was written. Returns the oracle."""
    n = len({e.event_id for e in expected})
    count = "SELECT uniqExact(eventId) FROM entityMetricEvents"
    wait_until(lambda: shape.rt.clickhouse.rows(count)[0][0] >= n, f"{n} events", timeout_s)
    wait_until(shape.settled, "the buffer and the dirty set to drain", 60)
    oracle = Oracle(now=datetime.now(UTC))
    oracle.apply_all(expected)
    assert_computed_and_cached_match(shape.rt, oracle)
    assert shape.rt.clickhouse.rows(count)[0][0] == n  # no stray events
    merge_the_log(shape.rt)  # what the background merges keep is still every number
    assert_computed_and_cached_match(shape.rt, oracle, "after merging the log")
    return oracle


@settings(max_examples=examples(6), deadline=None, suppress_health_check=list(HealthCheck))
@given(history=st.lists(an_event(), min_size=10, max_size=40), data=st.data())
def test_every_number_matches_the_oracle_with_two_worker_processes(shape: Shape, history: Any, data: Any) -> None:
    reset(shape)
    UserMetricsQueryService(shape.rt).get_user_metrics(USERS)  # cached hashes both workers must keep current
    # Given duplicates, a shuffled order and some batching, spread over both worker processes
    dupes = data.draw(st.lists(st.sampled_from(history), max_size=10))
    delivery = data.draw(st.permutations(history + dupes))
    producer = shape.producer
    for i in range(0, len(delivery), 3):
        chunk = delivery[i : i + 3]
        if data.draw(st.booleans(), label="batched"):
            producer.send("record_events", events=chunk)
        else:
            for item in chunk:
                producer.send(item["type"], **{k: v for k, v in item.items() if k != "type"})
    settled_at_the_oracle(shape, events_of(history))


def _runs(rt: Runtime) -> dict[str, int]:
    stats: Any = rt.redis.hgetall(c.COUNTER_KEY)
    return {job: int(stats.get(f"job_{job}_runs_total", 0)) for job in c.JOBS if job != c.CHECK_EVENT_BUFFER}


def test_two_beats_run_every_job_at_most_once_per_tick_and_the_board_matches(shape: Shape) -> None:
    reset(shape)
    # Given downloads on models owned by three users (scores 3, 2 and 2: a tie goes to the lower id)
    producer = shape.producer
    at = datetime.now(UTC) - timedelta(minutes=1)
    for owner, n in ((11, 3), (12, 2), (13, 2)):
        producer.record_upload(owner, "Model", owner * 100, occurred_at=at)
        for i in range(n):
            producer.record_entity_metric("Model", owner * 100, "Download", 1, 50 + i, owner_id=owner, occurred_at=at)
    beats = [f"beat{i}" for i in range(2)]
    before = _runs(shape.rt)
    started = time.monotonic()
    for name in beats:
        shape.start(name, [*CELERY, "beat", "--schedule", str(ROOT / f"procfile-{name}-schedule")])

    def board() -> dict[str, float]:
        return {str(k): float(v) for k, v in shape.rt.redis.zrange(keys.leaderboard(), 0, -1, withscores=True)}

    try:
        wait_until(lambda: board() == {"11": 3.0, "12": 2.0, "13": 2.0}, "the board from the beat-driven jobs", 60)
        time.sleep(3 * TICK_S)
    finally:
        for name in beats:
            shape.stop(name)
    elapsed = time.monotonic() - started
    runs = {job: n - before[job] for job, n in _runs(shape.rt).items()}
    assert min(runs.values()) >= 1, runs
    # Two beats publish every tick twice, two maintenance processes take them: at most one run per tick.
    assert max(runs.values()) <= elapsed / TICK_S + 2, (runs, elapsed)
    service = UserMetricsQueryService(shape.rt)
    assert [service.get_user_rank(u) for u in (11, 12, 13)] == [1, 2, 3]


def _job_counts(rt: Runtime, job: str) -> tuple[int, int]:
    stats: Any = rt.redis.hgetall(c.COUNTER_KEY)
    return int(stats.get(f"job_{job}_runs_total", 0)), int(stats.get(f"job_{job}_skipped_total", 0))


def test_a_job_held_in_one_process_is_skipped_by_another_until_it_ends(shape: Shape) -> None:
    """The engagement job is held inside its lock in one maintenance process (a failpoint armed through Redis);
    the next tick's run lands in the other process and must be skipped by the lock, not run beside it."""
    reset(shape)
    r, job = shape.rt.redis, c.RECOMPUTE_ENGAGEMENT
    armed, held = (failpoints.remote_key(failpoints.JOB_RUNNING, part) for part in ("armed", "held"))
    runs, skipped = _job_counts(shape.rt, job)
    r.set(armed, "1", ex=120)
    try:
        shape.app.send_task(job, queue=c.MAINTENANCE_QUEUE)
        wait_until(lambda: r.exists(held), "the first run to hold inside the lock", 30)
        time.sleep(TICK_S)  # the next tick: the slot lets the second run through, the lock must stop it
        shape.app.send_task(job, queue=c.MAINTENANCE_QUEUE)
        wait_until(lambda: _job_counts(shape.rt, job)[1] == skipped + 1, "the second run to be skipped", 30)
        assert _job_counts(shape.rt, job)[0] == runs  # the first is still held
    finally:
        r.delete(armed)
    wait_until(lambda: _job_counts(shape.rt, job)[0] == runs + 1, "the first run to finish", 30)
    assert _job_counts(shape.rt, job)[1] == skipped + 1


def test_hot_keys_written_by_two_worker_processes_stay_exact(shape: Shape) -> None:
    """Hundreds of messages on a handful of keys, spread over both worker processes: one user's reactions on one
    image toggled over and over (the reaction CAS), reactions and comments on an image sent before its Upload
    (orphans resolved by whichever flusher sees them), and one owner's cached hash marked by both flushers (the
    dirty-set clear). Every cached and computed number equals the oracle's, the reconciler finds no drift, and
    both processes' flushers took part."""
    import random

    from app.jobs.reconcile import reconcile_caches
    from app.read.reactions_service import UserReactionQueryService, all_reactions, latest_reactions

    reset(shape)
    reactions = UserReactionQueryService(
        shape.rt.redis,
        lambda u, imgs: latest_reactions(shape.rt.clickhouse, u, imgs),
        fills=None,
        complete=lambda u: all_reactions(shape.rt.clickhouse, u, 1000),  # the reactor's set, complete and cached
    )
    rnd = random.Random(14)
    reactor, (image, late_image) = 3, IMAGES  # owned by users 1 and 2
    UserMetricsQueryService(shape.rt).get_user_metrics(USERS)  # cached hashes the flushers must keep current
    reactions.get_user_reactions(reactor, [image, late_image])  # and a cached reactions key
    now = datetime.now(UTC) - timedelta(minutes=5)
    sent: list[dict[str, Any]] = [
        {"type": "record_upload", "user_id": OWNER[image], "content_type": "Image", "entity_id": image}
    ]
    for i in range(240):
        at = now + timedelta(milliseconds=rnd.randrange(200_000))
        who = rnd.choice([reactor, *USERS])
        if i % 3:
            target = rnd.choice([image, late_image])
            sent.append({"type": "set_reaction", "user_id": who, "image_id": target, "reactions": rnd.randrange(16)})
        else:
            sent.append(
                {
                    "type": "record_entity_metric",
                    "entity_type": "Image",
                    "entity_id": late_image,
                    "metric_type": "Comment",
                    "metric_value": 1,
                    "user_id": who,
                }
            )
        sent[-1]["occurred_at"] = at.isoformat()
    upload = {"type": "record_upload", "user_id": OWNER[late_image], "content_type": "Image", "entity_id": late_image}
    sent.insert(len(sent) * 2 // 3, upload)
    for m in sent:
        if m["type"] == "record_upload":
            m.update(is_removed=False, occurred_at=now.isoformat())
        m["event_id"] = str(uuid.uuid4())
    producer = shape.producer
    for m in sent + rnd.sample(sent, 40):  # with redeliveries
        producer.send(m["type"], **{k: v for k, v in m.items() if k != "type"})
    oracle = settled_at_the_oracle(shape, events_of(sent), timeout_s=90)
    assert shape.rt.redis.exists(flags_key(reactor))  # served from the cache the flushers kept
    flags = reactions.get_user_reactions(reactor, [image, late_image])
    assert dict(flags) == {i: oracle.reactions(reactor, i) for i in (image, late_image)}
    assert reconcile_caches(shape.rt, sample=0).drift_ratio == 0.0
    consumers: Any = shape.rt.redis.xinfo_consumers(c.EVENT_STREAM_KEY, c.EVENT_STREAM_GROUP)
    assert len(consumers) >= 2, consumers  # both worker processes' flushers read the buffer
