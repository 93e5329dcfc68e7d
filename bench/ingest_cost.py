"""``bench ingest``'s cost per event: a meter on a bench stack's processes and stores, and the jobs' share.

Processes (roles) of a bench stack, each with its descendants:

- ``worker``: the worker processes (the prefork parent and its pool children together). The stack runs one worker
  on every queue, so it is the maintenance worker too. In the embedded shape the ClickHouse engine runs inside it.
- ``clickhouse``: the server shape's ClickHouse server, found by the port of its URL (a server of another user or
  host is not counted).
- ``redis``: the stack's private ``redis-server``. It is the cache, the event buffer and the broker (its database
  1) at once: the broker is not a separate process.
- ``beat``: Celery beat, in the phase with the jobs running.

Rows written to ClickHouse: the engine's ``InsertedRows`` (read through the worker that owns it) in the embedded
shape; in the server shape the same counter of each insert in the stack's database from a server's ``query_log``,
or the server's own counter where it keeps no ``query_log`` (the local server of ``--server``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect

from app.core import constants as c
from app.core.settings import Settings
from app.jobs.registry import intervals
from app.jobs.run import job_counter
from app.ops.simulate import TrafficGenerator
from app.stores.broker import client_app
from bench.cost import PhaseCost, Snapshot, commandstats, listening_pid, read_stats, tree_seconds
from bench.harness import BenchStack

ROLES = ("worker", "clickhouse", "redis", "beat")
# The jobs' phase: a window long enough for every job of an interval up to a minute to run once after beat is up.
JOBS_WINDOW_S = 75.0
BEAT_START_S = 5.0


@dataclass
class Meter:
    """Snapshots of a stack's processes and stores around a phase."""

    stack: BenchStack
    started: float = 0.0  # Unix time: a server's query_log is read from here on

    def __post_init__(self) -> None:
        self.started = self.started or time.time()
        self._client: Any = None
        self._server_pid: int | None = None
        if self.stack.clickhouse_url is not None:
            port = urlsplit(self.stack.clickhouse_url).port
            self._server_pid = listening_pid(port) if port else None

    def roles(self) -> dict[str, list[int]]:
        s = self.stack
        out = {"worker": [p.pid for p in (s.worker, *s.others) if p is not None], "redis": [s.redis_pid]}
        if self._server_pid is not None:
            out["clickhouse"] = [self._server_pid]
        if s.beat is not None:
            out["beat"] = [s.beat.pid]
        return out

    def cpu(self) -> dict[str, float]:
        stats = read_stats()
        return {role: tree_seconds(pids, stats) for role, pids in self.roles().items()}

    def ask(self, task: str, timeout_s: float = 300.0, **kwargs: Any) -> Any:
        """Run a ``reads`` queue task on the stack's worker and wait for its answer."""
        if self._client is None:
            settings = Settings(
                DATA_DIR=str(self.stack.root), REDIS_URL=self.stack.cache_url, CELERY_BROKER_URL=self.stack.broker_url
            )
            self._client = client_app(settings)
        return self._client.send_task(task, kwargs=kwargs, queue=c.READS_QUEUE).get(timeout=timeout_s)

    def rows_written(self) -> float | None:
        url = self.stack.clickhouse_url
        if url is None:
            return float(self.ask(c.BENCH_ENGINE_COUNTERS).get("InsertedRows", 0))
        parts = urlsplit(url)
        client = clickhouse_connect.get_client(dsn=parts._replace(path="").geturl())
        try:
            return _server_rows(client, parts.path.strip("/"), self.started)
        finally:
            client.close()

    def begin(self) -> Snapshot:
        rows = self.rows_written()
        events = self.stack.ingested()
        own = dict(self.stack.polls)
        commands = commandstats(self.stack.cache)
        return Snapshot(self.cpu(), commands, rows, events, own)

    def end(self, before: Snapshot, messages: int) -> PhaseCost:
        cpu = self.cpu()
        commands = commandstats(self.stack.cache)
        own = dict(self.stack.polls)
        after = Snapshot(cpu, commands, self.rows_written(), self.stack.ingested(), own)
        return PhaseCost.between(before, after, messages)


def _server_rows(client: Any, database: str, since: float) -> float:
    """Rows a server's inserts wrote: each insert's ``InsertedRows`` in the stack's database from ``query_log``
    (the same counter as the engine's) on a server that keeps one; else the server's own ``InsertedRows``, which
    counts every database (the local server of ``--server`` keeps no system logs, and only the stack writes to it
    during a phase)."""
    has_log = bool(
        client.query("SELECT count() FROM system.tables WHERE database = 'system' AND name = 'query_log'").result_rows[
            0
        ][0]
    )
    if has_log:
        client.command("SYSTEM FLUSH LOGS")
        result = client.query(
            "SELECT sum(ProfileEvents['InsertedRows']) FROM system.query_log "
            "WHERE type = 'QueryFinish' AND query_kind = 'Insert' "
            "AND event_time >= toDateTime({t:Float64}) AND (current_database = {db:String} OR has(databases, "
            "{db:String}))",
            parameters={"t": since - 1, "db": database},
        )
        return float(result.result_rows[0][0] or 0)
    result = client.query("SELECT value FROM system.events WHERE event = 'InsertedRows'")
    return float(result.result_rows[0][0]) if result.result_rows else 0.0


def job_runs(stack: BenchStack) -> dict[str, int]:
    """Successful runs of every beat job so far (the service counters)."""
    names = list(intervals(Settings()))
    values = stack.cache.hmget(c.COUNTER_KEY, [job_counter(n, "runs_total") for n in names])
    return {n: int(v or 0) for n, v in zip(names, values, strict=True)}


def _window(meter: Meter, n: int, seed: int, next_entity: int, window_s: float) -> PhaseCost:
    """(b)'s mix sent at once, then the stack left alone until ``window_s`` after the start and until every message
    (the jobs' included) ran: what that window cost."""
    stack = meter.stack
    gen = TrafficGenerator(users=100_000, seed=seed, next_entity=next_entity)
    messages = [(m.task, m.kwargs) for m in gen.stream(n, duplicates=0.02, out_of_order=0.02)]
    runs = job_runs(stack)
    before = meter.begin()
    started = time.perf_counter()
    stack.enqueue_bulk(messages)
    stack.wait_drained()
    busy = time.perf_counter() - started
    time.sleep(max(0.0, window_s - busy))
    stack.wait_drained(queues=(c.EVENTS_QUEUE, c.MAINTENANCE_QUEUE))
    cost = meter.end(before, n)
    after = job_runs(stack)
    cost.notes["window_s"] = time.perf_counter() - started
    cost.notes["busy_s"] = busy
    cost.notes["job_runs"] = sum(after.values()) - sum(runs.values())
    return cost


def measure_jobs_share(meter: Meter, n: int, window_s: float = JOBS_WINDOW_S) -> tuple[PhaseCost, PhaseCost]:
    """(b)'s mix in a window of ``window_s`` without beat, then with beat running the project's schedule: the
    difference is what keeping the derived tables costs per event ingested at that schedule. Every job runs once
    beforehand (through the worker), so that the window's runs are the steady ones (incremental where a job has
    such runs), not a first full run, nor the events of the window without beat."""
    without = _window(meter, n, seed=300, next_entity=60_000_000, window_s=window_s)
    for name in intervals(Settings()):  # after the window without beat: the jobs' runs then cover the next only
        meter.ask(c.RUN_JOB_NOW, name=name)
    meter.stack.start_beat()
    time.sleep(BEAT_START_S)  # beat's start (imports, schedule file) is not a cost per event
    try:
        with_beat = _window(meter, n, seed=301, next_entity=80_000_000, window_s=window_s)
    finally:
        meter.stack.stop_beat()
    return without, with_beat
