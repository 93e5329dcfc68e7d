"""``python -m app bench chaos``: the production shape under steady traffic and a seeded storm of faults, checked
at the end against the oracle over every event the broker acknowledged.

Traffic is the simulator's (duplicates and reordering on) at a fixed rate, each message sent until the broker
acknowledges it (RabbitMQ publisher confirms; a Redis broker's LPUSH reply) and recorded then. Probes (a follow
every half second) time how long an acknowledged event takes to reach ClickHouse. Readers read metrics and pages
of reactions through the query services, so caches fill while events land. Faults (``bench/chaos_faults.py``) are
drawn from the seed: ``--faults-per-kind`` of each kind at random instants of the run, overlapping where their
targets differ. ``--rolling`` replaces them with a deploy: every process SIGTERMed and started again, one at a
time, three times. At the end the soak quiesces (every fault undone, the broker, the buffer and the refresher
drained) and compares, with ``bench/oracle.py``: the log's event ids, every user's computed and cached metrics, and
every cached reaction.
"""

from __future__ import annotations

import contextlib
import logging
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import redis

from app.client import EventProducer
from app.core import constants as c
from app.ops.simulate import TrafficGenerator
from app.read.clickhouse_sources import clickhouse_complete_source, clickhouse_reaction_source
from app.read.metrics_service import UserMetricsQueryService
from app.read.reactions_service import UserReactionQueryService
from app.stores import broker
from bench.chaos_check import attribute_losses, verify
from bench.chaos_faults import KINDS, Fault, Injector, reset_inserts
from bench.chaos_stack import REDIS_VISIBILITY_TIMEOUT_S, ChaosStack

PROBE_EVERY_S = 0.5
PROBE_TARGET = 1  # probes follow the most popular user


@dataclass
class Config:
    minutes: float = 2.0
    seed: int = 1
    broker: str = "rabbitmq"
    rate: float = 30.0  # messages per second
    users: int = 500
    faults_per_kind: int = 3
    stop_s: float = 10.0  # how long a stop_clickhouse fault holds the server
    refuse_s: float = 5.0  # how long a refuse_inserts fault lasts
    rolling: bool = False
    data_dir: Path | None = None


@dataclass
class Probe:
    event_id: str
    acked: float
    visible: float | None = None


@dataclass
class Run:
    """What the soak's threads record."""

    acked: list[dict[str, Any]] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    fault_errors: list[str] = field(default_factory=list)
    send_retries: int = 0
    read_errors: int = 0
    reads: int = 0
    memory_mb: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def record(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.acked.append(message)


def _send_until_acked(producer: EventProducer, run: Run, task: str, kwargs: dict[str, Any]) -> bool:
    """Send until the broker acknowledges (the same event id each time); False if the soak ended first."""
    while True:
        try:
            producer.send(task, **kwargs)
            run.record({"type": task, **kwargs, "_acked": time.monotonic()})
            return True
        except Exception:
            with run.lock:
                run.send_retries += 1
            if run.stop.wait(0.2):
                return False


def _traffic(stack: ChaosStack, cfg: Config, run: Run) -> None:
    producer = EventProducer(broker.client_app(stack.settings()))
    stream = TrafficGenerator(users=cfg.users, seed=cfg.seed).stream(10**9, duplicates=0.05, out_of_order=0.1)
    started = time.monotonic()
    for sent, msg in enumerate(stream, start=1):
        if run.stop.is_set() or not _send_until_acked(producer, run, msg.task, dict(msg.kwargs)):
            return
        ahead = sent / cfg.rate - (time.monotonic() - started)
        if ahead > 0 and run.stop.wait(ahead):
            return


def _probes(stack: ChaosStack, cfg: Config, run: Run) -> None:
    producer = EventProducer(broker.client_app(stack.settings()))
    for i in range(10**9):
        event_id = str(uuid.uuid4())
        kwargs = {
            "follower_id": cfg.users + 1 + i,
            "user_id": PROBE_TARGET,
            "event_id": event_id,
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        if not _send_until_acked(producer, run, c.RECORD_FOLLOW, kwargs):
            return
        with run.lock:
            run.probes.append(Probe(event_id, time.monotonic()))
        if run.stop.wait(PROBE_EVERY_S):
            return


def _outstanding(run: Run) -> list[Probe]:
    with run.lock:
        return [p for p in run.probes if p.visible is None]


def _watch_probes(stack: ChaosStack, run: Run, until: threading.Event) -> None:
    """Marks each probe visible when ClickHouse holds its event."""
    client: Any = None
    while not until.wait(0.1):
        waiting = _outstanding(run)
        if not waiting:
            continue
        try:
            if client is None:
                client = clickhouse_connect.get_client(dsn=stack.clickhouse_url, send_receive_timeout=5)
            found = client.query(
                "SELECT toString(eventId) FROM entityMetricEvents WHERE eventId IN {ids:Array(UUID)}",
                parameters={"ids": [p.event_id for p in waiting]},
            ).result_rows
        except Exception:
            client = None
            continue
        now = time.monotonic()
        seen = {row[0] for row in found}
        for probe in waiting:
            if probe.event_id in seen:
                probe.visible = now


def _readers(stack: ChaosStack, cfg: Config, run: Run) -> None:
    rt = stack.runtime()
    rng = random.Random(cfg.seed + 1)  # noqa: S311 - simulation
    metrics = UserMetricsQueryService(rt)
    reactions = UserReactionQueryService(
        rt.redis, clickhouse_reaction_source(rt), fills=None, complete=clickhouse_complete_source(rt)
    )
    while not run.stop.wait(0.1):
        user = rng.randint(1, cfg.users)
        try:
            metrics.get_user_metrics([user, rng.randint(1, cfg.users), PROBE_TARGET])
            first = rng.randint(1, max(1, len(run.acked) // 10))  # about where the uploads' image ids are
            reactions.get_user_reactions(user, list(range(first, first + 24)))
            run.reads += 1
        except Exception:
            run.read_errors += 1


def _schedule(cfg: Config, rng: random.Random, duration_s: float) -> list[tuple[float, str]]:
    """``faults_per_kind`` instants of each kind, uniform over the run after a warm-up, in time order."""
    warm = min(10.0, duration_s / 6)
    times = [(rng.uniform(warm, duration_s * 0.9), kind) for kind in KINDS for _ in range(cfg.faults_per_kind)]
    return sorted(times)


def _storm(stack: ChaosStack, cfg: Config, run: Run, started: float, duration_s: float) -> list[threading.Thread]:
    rng = random.Random(cfg.seed)  # noqa: S311 - a reproducible schedule
    injector = Injector(stack, random.Random(cfg.seed + 2), cfg.stop_s, cfg.refuse_s)  # noqa: S311
    threads = []

    def inject(kind: str) -> None:
        try:
            fault = injector.inject(kind)
        except Exception as exc:
            with run.lock:
                run.fault_errors.append(f"{kind}: {exc}")
            return
        with run.lock:
            run.faults.append(fault)

    for at, kind in _schedule(cfg, rng, duration_s):
        if run.stop.wait(max(0.0, started + at - time.monotonic())):
            break
        thread = threading.Thread(target=inject, args=(kind,), name=f"fault-{kind}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def _rolling(stack: ChaosStack, run: Run) -> None:
    """A deploy, three times: every process SIGTERMed, waited for and started again, one at a time."""
    for _ in range(3):
        for name in ("worker-1", "worker-2", "maintenance", "beat"):
            started = time.monotonic()
            stack.restart(name)
            run.faults.append(Fault(f"rolling_{name.split('-')[0]}", started, time.monotonic()))
            if run.stop.wait(5):
                return


def _quiesce(stack: ChaosStack, run: Run, timeout_s: float = 900) -> float:
    """Every message consumed, every buffered event written, every marked hash refreshed and every probe visible,
    for three seconds in a row; returns how long it took. Probes still missing once all the rest has been quiet
    for longer than a dead worker's messages can take to come back (the Redis broker's visibility timeout) are
    lost: the soak goes on to count them instead of waiting for them."""
    started = time.monotonic()
    client = clickhouse_connect.get_client(dsn=stack.clickhouse_url)
    reset_inserts(client)  # in case a refusal outlived its fault thread
    cache = redis.Redis.from_url(stack.cache.url)
    give_up_probes_s = (REDIS_VISIBILITY_TIMEOUT_S if stack.broker_redis is not None else 0) + 60
    quiet_since: float | None = None
    while time.monotonic() - started < timeout_s:
        try:
            depth = sum(s.depth for s in broker.queue_stats(stack.broker_url, [c.EVENTS_QUEUE]).values())
            busy = depth + int(cache.xlen(c.EVENT_STREAM_KEY)) + int(cache.zcard(c.METRICS_DIRTY_KEY))
        except Exception:
            busy = 1
        now = time.monotonic()
        if busy:
            quiet_since = None
            time.sleep(0.2)
            continue
        quiet_since = now if quiet_since is None else quiet_since
        probes_in = not _outstanding(run) or now - quiet_since >= give_up_probes_s
        if now - quiet_since >= 3 and probes_in:
            if stack.broker_unacked() == 0:  # nothing taken and still running, or held by a killed worker
                return now - started
            quiet_since = None
        time.sleep(0.2)
    raise TimeoutError(f"the stack did not drain in {timeout_s:.0f} s")


def _recovery(run: Run) -> dict[str, dict[str, float]]:
    """Per fault kind: seconds from the fault's end until the first probe sent after it was in ClickHouse."""
    seen = sorted((p.acked, p.visible) for p in run.probes if p.visible is not None)
    out: dict[str, list[float]] = {}
    for fault in run.faults:
        after = next((visible - fault.ended for acked, visible in seen if acked >= fault.ended), None)
        if after is not None:
            out.setdefault(fault.kind, []).append(after)
    return {k: {"n": len(v), "median_s": statistics.median(v), "max_s": max(v)} for k, v in sorted(out.items())}


def _longest_pause(run: Run) -> float:
    """The longest stretch in which no probe became visible while one was waiting: between two consecutive
    visibility instants a < b, from a (or from when the first probe still waiting after a was sent) to b."""
    seen = [p for p in run.probes if p.visible is not None]
    instants = sorted({p.visible for p in seen if p.visible is not None})
    longest = 0.0
    for a, b in zip(instants, instants[1:], strict=False):
        waiting = min(p.acked for p in seen if p.visible is not None and p.visible > a)
        longest = max(longest, b - max(a, waiting))
    return longest


def soak(cfg: Config) -> dict[str, Any]:
    # The readers' warnings (a store unreachable during a fault) are expected by the thousand: the report counts them.
    logging.getLogger("app").setLevel(logging.ERROR)
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
    with contextlib.ExitStack() as cleanup:
        root = cfg.data_dir or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="usermetrics-chaos-")))
        stack = ChaosStack(root, cfg.broker)
        cleanup.callback(stack.stop)
        stack.start_stores()
        stack.start_processes()
        run = Run()
        watching = threading.Event()
        threads = [
            threading.Thread(target=_traffic, args=(stack, cfg, run), daemon=True),
            threading.Thread(target=_probes, args=(stack, cfg, run), daemon=True),
            threading.Thread(target=_readers, args=(stack, cfg, run), daemon=True),
        ]
        watcher = threading.Thread(target=_watch_probes, args=(stack, run, watching), daemon=True)
        for t in [*threads, watcher]:
            t.start()
        duration = cfg.minutes * 60
        started = time.monotonic()
        time.sleep(min(10.0, duration / 6))
        run.memory_mb["start"] = stack.worker_rss_mb()
        middle = threading.Timer(duration / 2, lambda: run.memory_mb.__setitem__("middle", stack.worker_rss_mb()))
        middle.start()
        if cfg.rolling:
            _rolling(stack, run)
            faulting: list[threading.Thread] = []
        else:
            faulting = _storm(stack, cfg, run, started, duration)
        run.stop.wait(max(0.0, started + duration - time.monotonic()))
        run.stop.set()
        for t in [*threads, *faulting]:
            t.join(300)
        run.memory_mb["end"] = stack.worker_rss_mb()
        quiesce_s = _quiesce(stack, run)
        for name in ("beat", "maintenance"):  # no job runs beside the check's
            stack.hold(name)
        watching.set()
        watcher.join(10)
        report = verify(stack.runtime(), run.acked, cfg.users)
        report["lost_messages"] = attribute_losses(report, run.acked, run.faults, started)
        latencies = [p.visible - p.acked for p in run.probes if p.visible is not None]
        report.update(
            shape={"broker": cfg.broker, "minutes": cfg.minutes, "seed": cfg.seed, "rate": cfg.rate},
            faults=dict(Counter(f.kind for f in run.faults)),
            fault_errors=run.fault_errors,
            recovery_s=_recovery(run),
            visible_p50_s=statistics.median(latencies) if latencies else None,
            visible_max_s=max(latencies, default=None),
            longest_pause_s=_longest_pause(run),
            probes=len(run.probes),
            probes_never_visible=len(_outstanding(run)),
            producer_send_retries=run.send_retries,
            reads=run.reads,
            read_errors=run.read_errors,
            restarts={name: p.restarts for name, p in stack.procs.items()},
            worker_rss_mb=run.memory_mb,
            quiesce_s=quiesce_s,
        )
        return report
