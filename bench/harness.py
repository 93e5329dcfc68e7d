"""Shared pieces of the benchmarks: a private stack (embedded Redis, worker subprocess) and bulk enqueueing."""

from __future__ import annotations

import base64
import contextlib
import functools
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import redis

from app.core import constants as c
from app.core.settings import Settings
from app.local import embedded_redis
from app.ops.runner import ingest_worker_argv
from app.stores.clickhouse import ClickHouse
from app.stores.runtime import Runtime
from bench.cost import descendants, read_stats

# The checkout holding this package: the subprocesses a benchmark starts (workers, the read client) run there, so
# that ``-m`` finds ``bench`` and the project's code it measures on their path.
CHECKOUT = Path(__file__).resolve().parents[1]
# Their stdout goes to this process's stderr (a worker prints its banner): stdout holds only the results.
TO_STDERR = 2


def worker_argv(
    hostname: str, concurrency: int = 4, pool: str = "threads", app: str = "tasks.celery_app:celery_app"
) -> list[str]:
    """A worker on every queue: by default the project's, with a thread pool (it owns the embedded ClickHouse)."""
    queues = f"{c.EVENTS_QUEUE},{c.MAINTENANCE_QUEUE},{c.READS_QUEUE}"
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "--pool",
        pool,
        "-c",
        str(concurrency),
        "-Q",
        queues,
        "--hostname",
        hostname,
        "--loglevel",
        "WARNING",
    ]


def run_module(module: str, payload: Any, timeout_s: float = 3600.0) -> Any:
    """Run ``python -m module`` in a separate process of this checkout with ``payload`` as JSON on its stdin, and
    return the JSON document it prints (its stderr goes to ours). What a benchmark measures as another process
    would see it, or what must run where this process does not hold the embedded engine."""
    out = subprocess.run(  # noqa: S603 - our own module, arguments we built
        [sys.executable, "-m", module],
        input=json.dumps(payload),
        cwd=CHECKOUT,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        timeout=timeout_s,
    )
    return json.loads(out.stdout)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def task_headers(task: str, task_id: str, lang: str = "py") -> dict[str, Any]:
    """Headers of a Celery protocol-2 task message, as any producer (in any language) must send them."""
    return {
        "lang": lang,
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
    }


def task_body(kwargs: dict[str, Any]) -> list[Any]:
    """Body of a protocol-2 task message: no positional arguments, the keyword arguments, no callbacks."""
    return [[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def celery_message(task: str, kwargs: dict[str, Any], queue: str) -> bytes:
    """A Celery protocol-2 message as kombu's Redis transport stores it (what ``send_task`` would LPUSH)."""
    task_id = str(uuid.uuid4())
    body = json.dumps(task_body(kwargs))
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": task_headers(task, task_id),
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "priority": 0,
            "body_encoding": "base64",
            "delivery_info": {"exchange": queue, "routing_key": queue},
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope).encode()


@dataclass
class BenchStack:
    """A private embedded Redis and chdb path, and a worker subprocess that owns them."""

    root: Path
    cache_url: str
    broker_url: str
    redis_pid: int
    worker: subprocess.Popen[bytes] | None = None
    # Server shape: a ClickHouse server URL (with the database) and the extra worker processes.
    clickhouse_url: str | None = None
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)
    beat: subprocess.Popen[bytes] | None = None
    # Commands this process sent to the stack's Redis to watch it (polls), by name: a phase's cost leaves them out.
    polls: Counter[str] = field(default_factory=Counter)

    @cached_property
    def cache(self) -> redis.Redis:
        return redis.Redis.from_url(self.cache_url)

    def redis_client(self) -> redis.Redis:
        """The cache Redis as the project's adapters expect it (decoded responses)."""
        return redis.Redis.from_url(self.cache_url, decode_responses=True)

    @cached_property
    def broker(self) -> redis.Redis:
        return redis.Redis.from_url(self.broker_url)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("CLICKHOUSE_URL", "DATABASE_URL")}
        if self.clickhouse_url is not None:
            env["CLICKHOUSE_URL"] = self.clickhouse_url
        env.update(
            DATA_DIR=str(self.root),
            REDIS_URL=self.cache_url,
            CELERY_BROKER_URL=self.broker_url,
            LOG_LEVEL="WARNING",
            **extra,
        )
        return env

    def start_worker(self, concurrency: int = 4, **extra: str) -> None:
        """The project's worker on every queue; embedded, also the stack's events-only worker (``app.ops.runner``),
        as ``python -m app run`` starts them."""
        self.worker = subprocess.Popen(  # noqa: S603 - fixed argv
            worker_argv("bench@%h", concurrency) + ["--without-mingle", "--without-gossip"],
            env=self.env(**extra),
            cwd=CHECKOUT,
            stdout=TO_STDERR,
            start_new_session=True,
        )
        env = self.env(**extra)
        settings = Settings(
            CLICKHOUSE_URL=self.clickhouse_url,
            DATA_DIR=str(self.root),
            INGEST_PROCESSES=env.get("INGEST_PROCESSES", Settings.model_fields["ingest_processes"].default),
        )
        if settings.clickhouse_embedded and settings.ingest_processes:
            argv = ingest_worker_argv(settings.ingest_processes, "WARNING") + ["--without-mingle", "--without-gossip"]
            self.others.append(
                subprocess.Popen(argv, env=env, cwd=CHECKOUT, stdout=TO_STDERR, start_new_session=True)  # noqa: S603
            )

    def start_workers(self, n: int, pool: str, concurrency: int, app: str = "tasks.celery_app:celery_app") -> None:
        """``n`` worker instances (the first is ``self.worker``), each with its own pool."""
        for i in range(n):
            argv = worker_argv(f"bench{i}@%h", concurrency, pool, app) + ["--without-mingle", "--without-gossip"]
            proc = subprocess.Popen(  # noqa: S603 - fixed argv
                argv, env=self.env(), cwd=CHECKOUT, stdout=TO_STDERR, start_new_session=True
            )
            if self.worker is None:
                self.worker = proc
            else:
                self.others.append(proc)

    def start_beat(self) -> None:
        """Celery beat with the project's schedule (``tasks/schedule.py``), its state under the stack's root."""
        argv = [sys.executable, "-m", "celery", "-A", "tasks.celery_app:celery_app", "beat", "--loglevel", "WARNING"]
        self.beat = subprocess.Popen(  # noqa: S603 - fixed argv
            [*argv, "--schedule", str(self.root / "celerybeat-schedule")],
            env=self.env(),
            cwd=CHECKOUT,
            stdout=TO_STDERR,
            start_new_session=True,
        )

    def stop_beat(self) -> None:
        if self.beat is not None:
            if self.beat.poll() is None:
                os.killpg(self.beat.pid, signal.SIGTERM)
            self.beat.wait(60)
            self.beat = None

    def stop_worker(self) -> None:
        self.stop_beat()
        for proc in [self.worker, *self.others]:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [self.worker, *self.others]:
            if proc is None:
                continue
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.worker = None
        self.others = []

    def worker_peak_rss_mb(self) -> float:
        """Peak resident memory (VmHWM) of the worker process."""
        if self.worker is None:
            return float("nan")
        return _peak_rss_mb(self.worker.pid)

    def others_peak_rss_mb(self) -> float:
        """The other worker processes' peaks (VmHWM) added up, their pool processes included: an upper bound of
        what they held at once (0 when there are none)."""
        parents = {s.pid: s.ppid for s in read_stats().values()}
        pids = {p for proc in self.others for p in descendants(proc.pid, parents)}
        return sum(_peak_rss_mb(p) for p in pids if p in parents)

    def enqueue_bulk(self, messages: Iterable[tuple[str, dict[str, Any]]], queue: str = c.EVENTS_QUEUE) -> int:
        """LPUSH many task messages in pipelined chunks (far faster than one publish per message)."""
        n = 0
        pipe = self.broker.pipeline(transaction=False)
        for task, kwargs in messages:
            pipe.lpush(queue, celery_message(task, kwargs, queue))
            n += 1
            if n % 1000 == 0:
                pipe.execute()
        pipe.execute()
        return n

    def drained(self, queues: tuple[str, ...] = (c.EVENTS_QUEUE,)) -> bool:
        b, r = self.broker, self.cache
        checks: list[tuple[str, Callable[[], Any]]] = [("llen", functools.partial(b.llen, q)) for q in queues]
        checks += [
            ("hlen", functools.partial(b.hlen, "unacked")),
            ("xlen", functools.partial(r.xlen, c.EVENT_STREAM_KEY)),
            ("zcard", functools.partial(r.zcard, c.METRICS_DIRTY_KEY)),
        ]
        for command, check in checks:
            self.polls[command] += 1
            if check() != 0:
                return False
        return True

    def wait_drained(self, timeout_s: float = 600.0, queues: tuple[str, ...] = (c.EVENTS_QUEUE,)) -> float:
        """Seconds until every message of ``queues`` ran and every buffered event was flushed."""
        started = time.perf_counter()
        while not self.drained(queues):
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError("the worker did not drain in time")
            for proc in [self.worker, *self.others]:
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode}")
            time.sleep(0.005)
        return time.perf_counter() - started

    def ingested(self) -> int:
        self.polls["hget"] += 1
        return int(self.cache.hget(c.COUNTER_KEY, "events_ingested_total") or 0)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def bench_stack(clickhouse_url: str | None = None) -> Iterator[BenchStack]:
    """A private Redis (cache and broker databases) and, for the server shape, ``clickhouse_url``."""
    with tempfile.TemporaryDirectory(prefix="usermetrics-bench-") as tmp:
        root = Path(tmp)
        url, pid = embedded_redis.start(Settings(DATA_DIR=str(root)))
        base = url.rsplit("/", 1)[0]
        stack = BenchStack(root, f"{base}/0", f"{base}/1", pid, clickhouse_url=clickhouse_url)
        try:
            yield stack
        finally:
            stack.stop_worker()
            embedded_redis.stop(pid)


@contextlib.contextmanager
def private_runtime(settings: Settings, ch: ClickHouse, name: str) -> Iterator[Runtime]:
    """A runtime on ``ch`` whose cache is a private ``redis-server``, stopped afterwards. It runs without
    persistence: AOF rewrites would fork and stall it mid-measurement."""
    with tempfile.TemporaryDirectory(prefix=f"usermetrics-bench-{name}-") as tmp:
        url, pid = embedded_redis.start(Settings(DATA_DIR=tmp))
        try:
            rt = Runtime(settings.model_copy(update={"redis_url": url}), clickhouse=ch)
            rt.redis.config_set("appendonly", "no")
            yield rt
        finally:
            embedded_redis.stop(pid)


class Figures(dict[str, float]):
    """The printed figures, and the latencies behind each (for the plots)."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: dict[str, list[float]] = {}


def timed(fn: Callable[..., Any], *args: Any) -> float:
    """Milliseconds ``fn(*args)`` took."""
    started = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - started) * 1000


def steady(call: Callable[[int], Any], n: int) -> list[float]:
    """Latencies of ``call(i)`` after a short untimed warm-up and a garbage collection."""
    for i in range(min(20, n)):
        call(i)
    gc.collect()
    return [timed(call, i) for i in range(n)]


def put(f: Figures, key: str, values: list[float]) -> None:
    """``values``' p50 and p99 as ``key``'s figures, and the values themselves for the plots."""
    f[f"{key}_p50_ms"] = percentile(values, 50)
    f[f"{key}_p99_ms"] = percentile(values, 99)
    f.samples[key] = values
