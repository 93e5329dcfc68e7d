"""``python -m app bench ingest``: the write path's throughput, latency and memory against Celery's own ceiling.

(a) a no-op task's throughput (the ceiling of this machine and broker); (b) a realistic mix of per-message event
tasks, end to end (acknowledged, in ClickHouse and in the caches); (c) ``record_events`` with 500-event
messages; (d) event-to-visible latency at half of (b)'s rate; (e) the worker's peak memory; (f) the project's
no-op and (b) with the event tasks' task events sampled at 0, the default share and every message
(``EVENT_TASK_EVENTS_SAMPLE``). The figure of record of (b), (c) and (d) is their cost per event: CPU seconds of
every process of the stack per 1,000 events, rows written to ClickHouse per event and Redis commands per message
(``bench/ingest_cost.py``); (b) runs again in a window with and without beat, for the jobs' share.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect

from app.caches import metrics_cache
from app.core import constants as c
from app.core.metrics import UserMetrics
from app.core.settings import Settings
from app.ops.simulate import TrafficGenerator
from bench.cost import cost_rows
from bench.harness import BenchStack, bench_stack, percentile
from bench.ingest_cost import ROLES, Meter, measure_jobs_share

PLAIN_APP = "bench.plain:plain"

GOAL_RATIO = 0.7
GOAL_BATCH_EPS = 20_000
GOAL_P99_S = 0.5  # the write path's goal at the per-message rate; the contract's "within a second" is the bound
# (f): the event tasks' task-event samples compared: none, the default, every message.
DEFAULT_SAMPLE = float(Settings.model_fields["event_task_events_sample"].default)
SAMPLES = (0.0, DEFAULT_SAMPLE, 1.0)
SAMPLE_ROUNDS = 3


def sample_key(share: float) -> str:
    """``sample_1pct`` for 0.01: the prefix of (f)'s figures for one sample."""
    return f"sample_{share * 100:g}pct"


@dataclass
class IngestSizes:
    noop: int
    events: int
    batches: int
    batch_size: int
    latency_s: float

    @classmethod
    def pick(cls, quick: bool) -> IngestSizes:
        if quick:
            return cls(noop=3000, events=3000, batches=20, batch_size=500, latency_s=5)
        return cls(noop=20_000, events=20_000, batches=200, batch_size=500, latency_s=20)


@dataclass
class IngestResult:
    figures: dict[str, float] = field(default_factory=dict)
    server_workers: int = 0

    def rows(self) -> list[tuple[str, str, str]]:
        f = self.figures
        ceiling = f["noop_per_s"]
        rows = [
            (
                "(a) ceiling: plain Celery no-op",
                f"{ceiling:,.0f} tasks/s",
                f"best of prefork x2 {f['plain_prefork_per_s']:,.0f} / threads x4 {f['plain_threads_per_s']:,.0f}",
            ),
            (
                "    the project's worker, no-op",
                f"{f['own_noop_per_s']:,.0f} tasks/s",
                f"{f['own_noop_per_s'] / ceiling:.2f} of (a)",
            ),
            (
                "(b) per-message events, embedded",
                f"{f['mix_per_s']:,.0f} msgs/s ({f['mix_events_per_s']:,.0f} ev/s)",
                f"(b)/(a) = {f['ratio']:.2f} (goal >= {GOAL_RATIO})",
            ),
            (
                "(c) record_events x500, embedded",
                f"{f['batch_events_per_s']:,.0f} events/s",
                f"goal >= {GOAL_BATCH_EPS:,}",
            ),
        ]
        rows += self._cost_rows("embedded", "")
        for n in range(1, self.server_workers + 1):
            rows.append(
                (
                    f"(b) per-message, server, {n} worker process(es) x{f['server_concurrency']:.0f}",
                    f"{f[f'server{n}_mix_per_s']:,.0f} msgs/s",
                    f"(b)/(a) = {f[f'server{n}_mix_per_s'] / ceiling:.2f}",
                )
            )
            rows.append(
                (
                    f"(c) record_events x500, server, {n}",
                    f"{f[f'server{n}_batch_events_per_s']:,.0f} events/s",
                    f"goal >= {GOAL_BATCH_EPS:,}",
                )
            )
            rows += self._cost_rows(f"server x{n}", f"server{n}_")
        rows += [
            (
                "(d) event-to-visible latency",
                f"p50 {f['latency_p50_ms']:.0f} ms, p99 {f['latency_p99_ms']:.0f} ms",
                f"at {f['latency_rate']:.0f} msgs/s; goal p99 < {GOAL_P99_S * 1000:.0f} ms",
            ),
            (
                "(e) worker peak memory",
                f"{f['peak_rss_mb']:.0f} MB",
                f"embedded: the engine's owner; the events-only worker {f.get('ingest_peak_rss_mb', 0):.0f} MB more",
            ),
        ]
        if f"{sample_key(1.0)}_mix_per_s" in f:
            rows += self._sample_rows()
        return rows

    def _cost_rows(self, shape: str, prefix: str) -> list[tuple[str, str, str]]:
        """Each measured phase's cost per event; the jobs' share where (b) also ran with beat."""
        f = self.figures
        phases = [
            ("(b)", "mix"),
            ("(c)", "batch"),
            ("(d)", "latency"),
            ("(b) window, no beat,", "window"),
            ("(b) window, beat,", "beat"),
        ]
        rows = []
        where = "the engine inside the worker" if not prefix else ""
        for label, key in phases:
            if f"{prefix}{key}_events" in f:
                rows += cost_rows(f"{label} {shape}", f, f"{prefix}{key}", ROLES, where)
        total, rows_key = "_cpu_s_per_1k_events_total", "_clickhouse_rows_per_event"
        if f"{prefix}beat{total}" in f:
            with_beat, without = f[f"{prefix}beat{total}"], f[f"{prefix}window{total}"]
            rows.append(
                (
                    f"(b) jobs' share, {shape}: CPU s / 1,000 events",
                    _signed(with_beat - without, "CPU s"),
                    f"{with_beat:.2f} with beat, {without:.2f} without; {f[f'{prefix}beat_window_s']:.0f} s windows, "
                    f"{f[f'{prefix}beat_job_runs']:.0f} job runs",
                )
            )
            rows.append(
                (
                    f"(b) jobs' share, {shape}: ClickHouse rows / event",
                    _signed(f[f"{prefix}beat{rows_key}"] - f[f"{prefix}window{rows_key}"], "rows"),
                    "the derived tables the jobs keep",
                )
            )
        return rows

    def _sample_rows(self) -> list[tuple[str, str, str]]:
        f = self.figures
        labels = " / ".join(f"{s * 100:g}%" for s in SAMPLES)
        rows = []
        for what, key, unit in (("no-op", "noop_per_s", "tasks/s"), ("per-message mix", "mix_per_s", "msgs/s")):
            rates = [f[f"{sample_key(s)}_{key}"] for s in SAMPLES]
            rows.append(
                (
                    f"(f) {what}, event tasks' task events {labels} (best of {f['sample_rounds']:.0f})",
                    " / ".join(f"{r:,.0f}" for r in rates) + f" {unit}",
                    "of (a): "
                    + " / ".join(f"{r / f['noop_per_s']:.2f}" for r in rates)
                    + f"; 100% / 0% = {rates[-1] / rates[0]:.2f}",
                )
            )
        return rows


def _signed(value: float, unit: str) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f} {unit}"


def warm_up(stack: BenchStack) -> None:
    """First insert initialises the engine (seconds); keep it out of the measurements."""
    stack.enqueue_bulk([(c.RECORD_FOLLOW, {"follower_id": 1, "user_id": 2})])
    stack.wait_drained(120)


def _measure_noop(stack: BenchStack, n: int) -> float:
    started = time.perf_counter()
    stack.enqueue_bulk((c.BENCH_NOOP, {"i": i}) for i in range(n))
    stack.wait_drained()
    return n / (time.perf_counter() - started)


def _measure_mix(stack: BenchStack, n: int, seed: int = 1, next_entity: int = 1) -> tuple[float, float]:
    gen = TrafficGenerator(users=100_000, seed=seed, next_entity=next_entity)
    messages = [(m.task, m.kwargs) for m in gen.stream(n, duplicates=0.02, out_of_order=0.02)]
    before = stack.ingested()
    started = time.perf_counter()
    stack.enqueue_bulk(messages)
    stack.wait_drained()
    elapsed = time.perf_counter() - started
    return n / elapsed, (stack.ingested() - before) / elapsed


def _measure_batches(stack: BenchStack, batches: int, size: int) -> float:
    # Entities of their own: (b)'s uploads in the same database name other owners for the same ids.
    gen = TrafficGenerator(users=100_000, seed=2, next_entity=10_000_000)
    payloads = []
    for _ in range(batches):
        items = [{"type": m.task, **m.kwargs} for m in gen.stream(size)]
        payloads.append((c.RECORD_EVENTS, {"events": items}))
    before = stack.ingested()
    started = time.perf_counter()
    stack.enqueue_bulk(payloads)
    stack.wait_drained()
    return (stack.ingested() - before) / (time.perf_counter() - started)


def measure_latency(
    stack: BenchStack, rate: float, duration_s: float, on_start: Callable[[], object] = lambda: None
) -> list[float]:
    """Send follows of new target users at ``rate``; a watcher notes when each target's cached followerCount
    turns 1. The targets' hashes are cached beforehand (all zeros, as a reader would have left them); ``on_start``
    is called then, right before the first follow is sent."""
    sent: dict[int, float] = {}
    seen: dict[int, float] = {}
    done = threading.Event()
    lock = threading.Lock()

    def watch() -> None:
        cache = stack.cache
        while not done.is_set() or len(seen) < len(sent):
            with lock:
                waiting = [t for t in sent if t not in seen]
            if waiting:
                pipe = cache.pipeline(transaction=False)
                for t in waiting:
                    pipe.hget(metrics_cache.metrics_key(t), "followerCount")
                stack.polls["hget"] += len(waiting)
                now = time.perf_counter()
                for t, count in zip(waiting, pipe.execute(), strict=True):
                    if count == b"1":
                        seen[t] = now
            if done.is_set() and time.perf_counter() - last_send > 30:
                break
            time.sleep(0.002)

    total = int(rate * duration_s)
    targets = [1_000_000_000 + i for i in range(total)]
    metrics_cache.write(stack.redis_client(), 0, {t: UserMetrics() for t in targets})
    on_start()
    last_send = time.perf_counter()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    for i in range(total):
        target = 1_000_000_000 + i
        kwargs: dict[str, Any] = {
            "follower_id": 7,
            "user_id": target,
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        with lock:
            sent[target] = time.perf_counter()
        stack.enqueue_bulk([(c.RECORD_FOLLOW, kwargs)])
        last_send = time.perf_counter()
        delay = started + (i + 1) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    done.set()
    watcher.join(60)
    return [seen[t] - sent[t] for t in sent if t in seen] + [float("inf")] * (len(sent) - len(seen))


def _measure_ceiling(sizes: IngestSizes, f: dict[str, float]) -> None:
    """(a): a plain Celery worker with Celery's defaults, in its two fastest pools on this machine."""
    for pool, concurrency in (("prefork", 2), ("threads", 4)):
        with bench_stack() as stack:
            stack.start_workers(1, pool, concurrency, app=PLAIN_APP)
            _measure_noop(stack, 200)  # the worker is up and warm
            f[f"plain_{pool}_per_s"] = _measure_noop(stack, sizes.noop)
    f["noop_per_s"] = max(f["plain_prefork_per_s"], f["plain_threads_per_s"])


def _measure_embedded(sizes: IngestSizes, f: dict[str, float], jobs: bool) -> None:
    with bench_stack() as stack:
        stack.start_worker()
        warm_up(stack)
        meter = Meter(stack)
        f["own_noop_per_s"] = _measure_noop(stack, sizes.noop)
        before = meter.begin()
        f["mix_per_s"], f["mix_events_per_s"] = _measure_mix(stack, sizes.events)
        f.update(meter.end(before, sizes.events).figures("mix"))
        f["ratio"] = f["mix_per_s"] / f["noop_per_s"]
        before = meter.begin()
        f["batch_events_per_s"] = _measure_batches(stack, sizes.batches, sizes.batch_size)
        f.update(meter.end(before, sizes.batches).figures("batch"))
        f["latency_rate"] = f["mix_per_s"] / 2
        starts = []
        latencies = measure_latency(stack, f["latency_rate"], sizes.latency_s, lambda: starts.append(meter.begin()))
        f.update(meter.end(starts[0], len(latencies)).figures("latency"))
        f["latency_p50_ms"] = percentile(latencies, 50) * 1000
        f["latency_p99_ms"] = percentile(latencies, 99) * 1000
        f["peak_rss_mb"] = stack.worker_peak_rss_mb()
        f["ingest_peak_rss_mb"] = stack.others_peak_rss_mb()
        if jobs:
            _measure_jobs(meter, sizes, f, "")


def _measure_jobs(meter: Meter, sizes: IngestSizes, f: dict[str, float], prefix: str) -> None:
    without, with_beat = measure_jobs_share(meter, sizes.events)
    f.update(without.figures(f"{prefix}window"))
    f.update(with_beat.figures(f"{prefix}beat"))


def _measure_samples(sizes: IngestSizes, f: dict[str, float]) -> None:
    """(f): the project's worker (embedded) with the event tasks' task events sampled at each of ``SAMPLES``: one
    stack each, all up at once, measured in interleaved rounds (the no-op, then the per-message mix, each sample in
    turn, the order reversed every round) so that a busy spell of the machine falls on every sample alike; each
    figure is the best of its rounds."""
    rounds = SAMPLE_ROUNDS
    noop_n, mix_n = sizes.noop // rounds, sizes.events // rounds
    with contextlib.ExitStack() as exits:
        stacks = {share: exits.enter_context(bench_stack()) for share in SAMPLES}
        for share, stack in stacks.items():
            # No exporter: the three workers would contend for one port, and it is not on a message's path.
            stack.start_worker(EVENT_TASK_EVENTS_SAMPLE=str(share), TASK_EVENTS="true", METRICS_PORT="0")
            warm_up(stack)
        for r in range(rounds):
            order = list(SAMPLES) if r % 2 == 0 else list(reversed(SAMPLES))
            for share in order:
                key = sample_key(share)
                noop = _measure_noop(stacks[share], noop_n)
                f[f"{key}_noop_per_s"] = max(f.get(f"{key}_noop_per_s", 0.0), noop)
            for share in order:
                key = sample_key(share)
                # Entities of this round's own: an earlier round's uploads name other owners for the same ids.
                mix, _ = _measure_mix(stacks[share], mix_n, seed=100 + r, next_entity=20_000_000 * (r + 1))
                f[f"{key}_mix_per_s"] = max(f.get(f"{key}_mix_per_s", 0.0), mix)
    for share in SAMPLES:
        key = sample_key(share)
        f[f"{key}_ratio"] = f[f"{key}_mix_per_s"] / f["noop_per_s"]
    f["sample_rounds"] = rounds


def _measure_server(
    sizes: IngestSizes, base_url: str, workers: int, concurrency: int, f: dict[str, float], jobs: bool
) -> None:
    """The server shape: ``n`` prefork worker processes (``concurrency`` pool processes each, the Procfile's 4 by
    default) on one ClickHouse server, n = 1..N, each on a fresh database."""
    for n in range(1, workers + 1):
        database = f"usermetrics_bench_ingest_{n}"
        admin = clickhouse_connect.get_client(dsn=base_url)
        admin.command(f"DROP DATABASE IF EXISTS {database}")
        try:
            with bench_stack(f"{base_url}/{database}") as stack:
                stack.start_workers(n, "prefork", concurrency)
                meter = Meter(stack)
                warm_up(stack)
                before = meter.begin()
                f[f"server{n}_mix_per_s"], _ = _measure_mix(stack, sizes.events)
                f.update(meter.end(before, sizes.events).figures(f"server{n}_mix"))
                before = meter.begin()
                f[f"server{n}_batch_events_per_s"] = _measure_batches(stack, sizes.batches, sizes.batch_size)
                f.update(meter.end(before, sizes.batches).figures(f"server{n}_batch"))
                if jobs and n == 1:
                    _measure_jobs(meter, sizes, f, f"server{n}_")
        finally:
            admin.command(f"DROP DATABASE IF EXISTS {database}")
            admin.close()


def run(
    quick: bool, clickhouse_url: str | None = None, workers: int = 0, concurrency: int = 4, jobs: bool = True
) -> IngestResult:
    """Embedded figures, and with ``clickhouse_url`` (a server) the server shape with 1..``workers`` processes;
    with ``jobs``, (b) again with and without beat (embedded, and the server shape with one worker process)."""
    sizes = IngestSizes.pick(quick)
    result = IngestResult(server_workers=workers if clickhouse_url else 0)
    f = result.figures
    _measure_ceiling(sizes, f)
    _measure_embedded(sizes, f, jobs)
    _measure_samples(sizes, f)
    if clickhouse_url is not None and workers:
        f["server_concurrency"] = concurrency
        _measure_server(sizes, _server_base(clickhouse_url), workers, concurrency, f, jobs)
    return result


def _server_base(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))
