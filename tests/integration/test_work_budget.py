"""The work budget: what a fixed workload costs the stores, counted (never timed), each figure against a budget.

A change that adds a statement to a flush, a view to the event table, a round trip to the write path, or makes a
beat job's statements grow with the events of its run, fails here with the new figure. If the new cost is meant,
accept it on purpose: set the budget next to the assertion to the figure the failure prints and say why in the
commit. A figure that drops below its budget fails too, so that the gain is kept: lower the budget.

How each figure is counted, with the real stores and the project's own code:

- ClickHouse statements: the session's ClickHouse handle, wrapped to count every statement sent through it (the
  same client and lock underneath; the in-process worker's threads, idle here, are not counted).
- Rows written: with the database's merges stopped, the rows every table holds after the workload (the tables of
  the materialized views included), all tables empty before. What one insert writes is what it stores: a
  replacing or aggregating table collapses the rows of one key within an insert, and an ``EmbeddedRocksDB`` table
  holds one row per key.
- Redis: a private ``redis-server`` for this module, so that nothing else talks to it: server-side commands from
  ``INFO commandstats`` deltas (a command inside a Lua script counts), and round trips counted on the connection
  of the project's own client (a pipeline is one round trip).

The event tasks' own code (``app.write.ingest.receive``, what ``tasks/events.py`` runs) and the flusher
(``Flusher.flush_once``) are driven directly, without the broker: Celery's traffic is not the project's write path,
and the flusher's batches are then the same at every run. Figures hold for one ClickHouse server and for the
embedded engine (they differ where a server needs a statement the engine does not, see the budgets); a ClickHouse
cluster is not measured.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from app.caches.metrics_cache import metrics_key
from app.core import constants as c
from app.core.settings import Settings
from app.jobs import registry
from app.local import embedded_redis
from app.read.metrics_service import UserMetricsQueryService
from app.stores.clickhouse import ClickHouse
from app.stores.runtime import Runtime
from app.write import buffer, flusher, ingest
from app.write.flusher import Flusher
from bench.cost import command_delta, commandstats
from tests.stack import CLUSTER_MODE, SERVER_MODE, wait_drained, wipe_clickhouse

pytestmark = pytest.mark.skipif(CLUSTER_MODE, reason="the budgets are for one ClickHouse server or the engine")

T = TypeVar("T")
SHAPE = "server" if SERVER_MODE else "embedded"

# ---------------------------------------------------------------------------------------------------------------
# Budgets. Each is the figure this workload costs today, per shape where the shapes differ.
# ---------------------------------------------------------------------------------------------------------------

# ClickHouse statements of each flush of the workload's three waves (``Flusher.flush_once``): the event-id registry
# lookup, the owners of the batch's entities, the orphans to adopt, the insert; a server adds the second look for
# orphans after the insert (several flushers may interleave there; the engine has one flusher).
FLUSH_STATEMENTS_BUDGET = {"embedded": [4, 4, 4], "server": [6, 6, 6]}[SHAPE]

# Rows written to ClickHouse per event the flusher wrote, across every table: the event log and what its views
# write (state by actor and by owner, daily additive sums, the changelog, the event-id registry, the reactions'
# arrival marks per image and per user), adopted orphans included. Same in both shapes.
ROWS_PER_EVENT_BUDGET = 5.05

# Redis round trips per message on the write path: the event task's append (one pipeline; a message without
# ``occurred_at`` also pins its receive time) and its share of the flushes (reads of the buffer, the reactions
# merge, the dirty marks, the acknowledgement, the service counters). A server adds two per flush: the flushers'
# turn, taken and handed on (the embedded engine has one flusher and no turns).
REDIS_ROUND_TRIPS_PER_MESSAGE_BUDGET = {"embedded": 1.59, "server": 1.78}[SHAPE]
# The commands Redis ran for those round trips, per message (``INFO commandstats``; a pipeline counts per command,
# a script's own calls count too).
REDIS_COMMANDS_PER_MESSAGE_BUDGET = {"embedded": 6.41, "server": 6.78}[SHAPE]

# ClickHouse statements of one run of each beat job (``registry.run_now``): the first run after the workload (full,
# for the jobs that keep a derived table), then a run after each of two batches, one changing 10 keys and one 100
# (incremental), their users read and their cached hashes about to expire. A run after the changes must not cost
# more statements when more keys changed: both batches must cost the same. A server adds a statement before each
# changelog slice that the engine does not need (the age of inserts still in flight; the metrics snapshot job keeps
# four derived tables, so four of them).
JOB_STATEMENTS_BUDGET: dict[str, tuple[int, int]] = {  # job -> (first run, a run after the changes)
    "embedded": {
        "recompute_engagement": (8, 13),
        "recompute_ranks": (1, 1),
        "refresh_expiring_caches": (2, 2),
        "reconcile_caches": (3, 3),
        "snapshot_user_metrics": (29, 24),
        "recompute_peers": (5, 5),
        "award_achievements": (9, 10),
    },
    "server": {
        "recompute_engagement": (9, 14),
        "recompute_ranks": (1, 1),
        "refresh_expiring_caches": (2, 2),
        "reconcile_caches": (3, 3),
        "snapshot_user_metrics": (33, 28),
        "recompute_peers": (5, 5),
        "award_achievements": (10, 11),
    },
}[SHAPE]


def check(figure: T, budget: T, name: str, what: str) -> None:
    """``figure`` is ``budget``; else fail with the new figure and what to do about it."""
    if figure == budget:
        return
    more = _total(figure) > _total(budget)
    pytest.fail(
        f"{what}: the {SHAPE} shape measures {figure!r}, its budget {name} says {budget!r}. "
        + ("If this change is meant to cost more, accept it on purpose" if more else "Keep the gain")
        + f": set {name} ({SHAPE}) in {Path(__file__).name} to {figure!r}, and say why in the commit.",
        pytrace=False,
    )


def _total(value: Any) -> float:
    return float(sum(value)) if isinstance(value, tuple | list) else float(value or 0)


# ---------------------------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------------------------


class CountingClickHouse(ClickHouse):
    """The session's ClickHouse handle, counting each statement sent through it (``statements``), and noting what
    each was (``sent``: the start of its SQL, or the table of an insert) for the failure messages. The same client
    and lock underneath (the engine is one per process, shared with the in-process worker's threads), nothing else
    changed."""

    def __init__(self, base: ClickHouse) -> None:
        # Statements are counted where the handle sends them: a handle without ``_run`` would count none.
        assert callable(getattr(ClickHouse, "_run", None)), "ClickHouse no longer sends through _run: count elsewhere"
        super().__init__(base.client, base.database, base.embedded, base.cluster)
        self._lock = base._lock
        self.statements = 0
        self.sent: list[str] = []

    def _run(self, op: Callable[[Any], T]) -> T:
        self.statements += 1
        return super()._run(op)

    def _note(self, sql: str) -> None:
        self.sent.append(" ".join(sql.split())[:70])

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        self._note(sql)
        return super().command(sql, parameters)

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self._note(sql)
        return super().rows(sql, parameters)

    def rows_with_table(self, sql: str, name: str, structure: str, rows: Any, parameters: Any = None) -> Any:
        self._note(sql)
        return super().rows_with_table(sql, name, structure, rows, parameters)

    def insert(self, table: str, rows: Any, columns: Any, column_oriented: bool = False, settings: Any = None) -> None:
        self._note(f"INSERT INTO {table}")
        super().insert(table, rows, columns, column_oriented, settings)


@dataclass
class RoundTrips:
    count: int = 0


def counting_connection(counter: RoundTrips) -> type[redis.Connection]:
    """A connection class that counts what it sends: one packed send per command, one per pipeline."""

    class Counting(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            counter.count += 1
            super().send_packed_command(command, check_health)

    return Counting


def rows_by_table(ch: ClickHouse) -> dict[str, int]:
    """Rows each table of the database holds (views hold none of their own), in one statement."""
    tables = [
        name
        for (name,) in ch.rows(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT LIKE '%View%' "
            "AND name != 'schema_migrations' ORDER BY name"
        )
    ]
    sql = " UNION ALL ".join(f"SELECT '{t}', count() FROM `{t}`" for t in tables)  # noqa: S608 - the schema's names
    return {str(t): int(n) for t, n in ch.rows(sql) if int(n)}


@dataclass
class Budgeted:
    """A runtime on a private Redis and the session's ClickHouse, both counted."""

    rt: Runtime
    ch: CountingClickHouse
    base: ClickHouse
    round_trips: RoundTrips
    stats: redis.Redis  # a separate, uncounted client for INFO
    flusher: Flusher = field(init=False)

    def __post_init__(self) -> None:
        self.flusher = Flusher(self.rt, consumer="budget")

    def wipe(self) -> None:
        self.rt.redis.flushdb()
        wipe_clickhouse(self.rt)
        buffer.ensure_group(self.rt.redis)


@pytest.fixture(scope="module")
def private_redis() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="usermetrics-budget-") as data:
        url, pid = embedded_redis.start(Settings(DATA_DIR=data, EMBEDDED_REDIS_APPENDFSYNC="everysec"))
        try:
            yield url
        finally:
            embedded_redis.stop(pid)


@pytest.fixture()
def budgeted(clean: Runtime, private_redis: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Budgeted]:
    wait_drained(clean)  # nothing an earlier test sent is still on its way to ClickHouse
    # Stale entries of dead consumers are looked for every 15 s of the flusher's clock: not during a measurement.
    monkeypatch.setattr(flusher, "RECLAIM_EVERY_S", float("inf"))
    base = clean.clickhouse
    ch = CountingClickHouse(base)
    rt = Runtime(clean.settings.model_copy(update={"redis_url": private_redis}), clickhouse=ch)
    round_trips = RoundTrips()
    pool: Any = rt.redis.connection_pool
    pool.connection_class = counting_connection(round_trips)
    pool.connection_kwargs["health_check_interval"] = 0  # no PING after an idle spell: the same figure every run
    stats = redis.Redis.from_url(private_redis)
    merge_tables = [
        name
        for (name,) in base.rows(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree%'"
        )
    ]
    for name in merge_tables:  # rows held are rows written only while no merge collapses them
        base.command(f"SYSTEM STOP MERGES `{base.database}`.`{name}`")
    b = Budgeted(rt, ch, base, round_trips, stats)
    b.wipe()
    try:
        yield b
    finally:
        for name in merge_tables:
            base.command(f"SYSTEM START MERGES `{base.database}`.`{name}`")
        stats.close()
        rt.redis.connection_pool.disconnect()


# ---------------------------------------------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------------------------------------------

# Event times are hours after a fixed midnight, four days back: which events share a day (the daily additive rows)
# is then the same whatever the time of day the test runs.
BASE = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=4)
NAMESPACE = uuid.UUID("6f1d7c52-2a4e-4f55-9b51-0c3c7a1e0b29")


@dataclass(frozen=True)
class Message:
    task: str
    kwargs: dict[str, Any]
    task_id: str


def message(task: str, key: str, hour: float, *, raw: bool = False, **kwargs: Any) -> Message:
    """A message as a producer sends it: its own event id and time (a raw producer's carries neither)."""
    task_id = str(uuid.uuid5(NAMESPACE, f"task-{key}"))
    if not raw:
        kwargs |= {
            "event_id": str(uuid.uuid5(NAMESPACE, key)),
            "occurred_at": (BASE + timedelta(hours=hour)).isoformat(),
        }
    return Message(task, kwargs, task_id)


def follow(key: str, a: int, b: int, hour: float, on: bool = True, **kw: Any) -> Message:
    return message(c.RECORD_FOLLOW, key, hour, follower_id=a, user_id=b, is_follow=on, **kw)


def upload(key: str, user: int, kind: str, entity: int, hour: float, removed: bool = False) -> Message:
    return message(c.RECORD_UPLOAD, key, hour, user_id=user, content_type=kind, entity_id=entity, is_removed=removed)


def react(key: str, user: int, image: int, flags: int, hour: float, owner: int | None = None) -> Message:
    extra = {"owner_id": owner} if owner is not None else {}
    return message(c.SET_REACTION, key, hour, user_id=user, image_id=image, reactions=flags, **extra)


def download(key: str, user: int, kind: str, entity: int, hour: float, value: int = 1) -> Message:
    return message(
        c.RECORD_ENTITY_METRIC,
        key,
        hour,
        entity_type=kind,
        entity_id=entity,
        metric_type="Download",
        metric_value=value,
        user_id=user,
    )


def batch_item(m: Message) -> dict[str, Any]:
    return {"type": m.task, **m.kwargs}


FIRST_WAVE = [
    upload("up-100", 1, "Image", 100, 10),
    upload("up-101", 2, "Image", 101, 11),
    upload("up-200", 3, "Model", 200, 12),
    follow("f-2-1", 2, 1, 13),
    follow("f-3-1", 3, 1, 14),
    follow("f-4-1", 4, 1, 15),
    follow("f-1-2", 1, 2, 16),
    react("r-4-100", 4, 100, 0b0011, 17, owner=1),
    react("r-5-100", 5, 100, 0b1000, 18),
    react("r-6-101", 6, 101, 0b1111, 19, owner=2),
    react("r-4-102", 4, 102, 0b0010, 20),  # image 102 is uploaded in the second wave: an orphan until then
    download("d-5-100", 5, "Image", 100, 21),
    download("d-6-200", 6, "Model", 200, 22, value=2),
    download("d-7-102", 7, "Image", 102, 23),  # an orphan too
    follow("raw-6-3", 6, 3, 0, raw=True),  # a raw producer: the worker derives the id and pins the time
    follow("f-2-1", 2, 1, 13),  # duplicates: the same messages delivered twice
    react("r-4-100", 4, 100, 0b0011, 17, owner=1),
    message(
        c.RECORD_EVENTS,
        "batch-1",
        24,
        events=[
            batch_item(follow("b-7-1", 7, 1, 24)),
            batch_item(react("b-7-101", 7, 101, 0b0100, 25)),
            batch_item(download("b-8-101", 8, "Image", 101, 26)),
        ],
    ),
]
SECOND_WAVE = [
    upload("up-102", 3, "Image", 102, 30),  # adopts the orphans of image 102
    follow("unf-3-1", 3, 1, 31, on=False),
    react("clr-4-100", 4, 100, 0, 32),  # reactions cleared
    react("clr-6-101", 6, 101, 0, 33, owner=2),
    download("d-8-100", 8, "Image", 100, 34),
    download("d-5-102", 5, "Image", 102, 35, value=3),
    follow("f-8-2", 8, 2, 36),
    follow("f-4-1", 4, 1, 15),  # a redelivery of a message already written by the first wave's flush
]
THIRD_WAVE = [
    react("r-8-102", 8, 102, 0b0101, 40),
    react("r-1-101", 1, 101, 0b0001, 41, owner=2),
    follow("f-5-1", 5, 1, 42),
    follow("unf-5-1", 5, 1, 43, on=False),
    upload("rm-200", 3, "Model", 200, 44, removed=True),
    download("d-2-200", 2, "Model", 200, 45),
]
WAVES = [FIRST_WAVE, SECOND_WAVE, THIRD_WAVE]
READERS = (1, 2, 3, 4)  # users whose cached hashes the write path must keep current


def send(b: Budgeted, messages: Sequence[Message]) -> None:
    """What the event task does with each message."""
    for m in messages:
        ingest.receive(b.rt.redis, m.task, m.task_id, m.kwargs, ingest.pin_ttl_s(b.rt.settings))


def flush(b: Budgeted, messages: Sequence[Message]) -> int:
    """One cycle of the flusher, which takes every buffered message; returns the events it wrote."""
    result = b.flusher.flush_once(block_ms=0)
    assert result.entries == len(messages), f"one flush was to take {len(messages)} messages, took {result.entries}"
    return result.events


@dataclass
class WriteFigures:
    messages: int = 0
    events: int = 0
    flush_statements: list[int] = field(default_factory=list)
    flush_sent: list[list[str]] = field(default_factory=list)
    append_round_trips: int = 0
    flush_round_trips: list[int] = field(default_factory=list)
    commands: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_event(self) -> float:
        return round(sum(self.rows.values()) / self.events, 2)

    @property
    def round_trips_per_message(self) -> float:
        return round((self.append_round_trips + sum(self.flush_round_trips)) / self.messages, 2)

    @property
    def commands_per_message(self) -> float:
        return round(sum(self.commands.values()) / self.messages, 2)

    def report(self) -> str:
        return (
            f"{SHAPE}: {self.messages} messages, {self.events} events written in {len(self.flush_statements)} "
            f"flushes; ClickHouse statements per flush {self.flush_statements}; rows per event "
            f"{self.rows_per_event} {self.rows}; Redis round trips per message {self.round_trips_per_message} "
            f"(appends {self.append_round_trips}, flushes {self.flush_round_trips}); commands per message "
            f"{self.commands_per_message} {self.commands}"
        )


def run_workload(b: Budgeted) -> WriteFigures:
    """Send and flush the three waves, each flushed before the next, counting what the write path costs."""
    figures = WriteFigures()
    UserMetricsQueryService(b.rt).get_user_metrics(READERS)  # cached hashes: their users get marked
    b.flusher.flush_once(block_ms=0)  # the flusher's first cycle looks for its own pending entries (none)
    commands_before = commandstats(b.stats)
    for wave in WAVES:
        trips = b.round_trips.count
        send(b, wave)
        figures.messages += len(wave)
        figures.append_round_trips += b.round_trips.count - trips
        trips, statements, sent = b.round_trips.count, b.ch.statements, len(b.ch.sent)
        figures.events += flush(b, wave)
        figures.flush_statements.append(b.ch.statements - statements)
        figures.flush_sent.append(b.ch.sent[sent:])
        figures.flush_round_trips.append(b.round_trips.count - trips)
    figures.commands = command_delta(commands_before, commandstats(b.stats))
    assert b.stats.xlen(c.EVENT_STREAM_KEY) == 0, "the buffer was to be empty after the flushes"
    figures.rows = rows_by_table(b.base)
    return figures


def test_write_path_statements_rows_and_round_trips_are_on_budget(budgeted: Budgeted) -> None:
    # Given a warm Redis (the flusher's scripts loaded; a first call costs a load that later ones do not)
    run_workload(budgeted)
    budgeted.wipe()
    # When the workload runs again on empty stores
    figures = run_workload(budgeted)
    print(figures.report())
    # Then each figure is its budget
    check(
        figures.flush_statements,
        FLUSH_STATEMENTS_BUDGET,
        "FLUSH_STATEMENTS_BUDGET",
        f"ClickHouse statements per flush {figures.flush_sent}",
    )
    check(figures.rows_per_event, ROWS_PER_EVENT_BUDGET, "ROWS_PER_EVENT_BUDGET", f"rows per event {figures.rows}")
    check(
        figures.round_trips_per_message,
        REDIS_ROUND_TRIPS_PER_MESSAGE_BUDGET,
        "REDIS_ROUND_TRIPS_PER_MESSAGE_BUDGET",
        "Redis round trips per message",
    )
    check(
        figures.commands_per_message,
        REDIS_COMMANDS_PER_MESSAGE_BUDGET,
        "REDIS_COMMANDS_PER_MESSAGE_BUDGET",
        f"Redis commands per message {figures.commands}",
    )


# ---------------------------------------------------------------------------------------------------------------
# The jobs
# ---------------------------------------------------------------------------------------------------------------


def changes(n: int, tag: str) -> list[Message]:
    """``n`` messages, each changing one key no earlier message touched: follows, reactions, downloads, uploads."""
    out: list[Message] = []
    for i in range(n):
        user = 1000 + i
        key = f"{tag}-{i}"
        kind = i % 4
        if kind == 0:
            out.append(follow(key, user, 1 + i % 3, 70))
        elif kind == 1:
            out.append(react(key, user, 100 + i % 3, 1 + i % 15, 70, owner=1 + i % 3))
        elif kind == 2:
            out.append(download(key, user, "Image", 100 + i % 3, 70))
        else:
            out.append(upload(key, user, "Image", 10_000 + i, 70))
    return out


@dataclass(frozen=True)
class JobRun:
    statements: int
    mode: str
    sent: list[str]

    def __repr__(self) -> str:
        return f"{self.statements} ({self.mode or '-'})"


def run_jobs(b: Budgeted) -> dict[str, JobRun]:
    """Each beat job once, as ``python -m app jobs run`` runs it: the ClickHouse statements of each run."""
    out = {}
    for name in registry.JOBS:
        before, sent = b.ch.statements, len(b.ch.sent)
        report = registry.run_now(b.rt, name)
        assert "skipped" not in report, (name, report)
        out[name] = JobRun(b.ch.statements - before, str(report["mode"]), b.ch.sent[sent:])
    return out


def read_and_expiring(b: Budgeted, users: Sequence[int]) -> None:
    """Read the users' metrics (cached, and recent reads for the jobs), then make their hashes expire within the
    re-warming job's reach, so that its runs have users to recompute."""
    UserMetricsQueryService(b.rt).get_user_metrics(users)
    for user in users:
        b.stats.pexpire(metrics_key(user), 60_000)


def test_job_statements_follow_what_changed_not_the_events_of_a_run(budgeted: Budgeted) -> None:
    # Given the workload written and read, and a first run of every job (full)
    for wave in WAVES:
        send(budgeted, wave)
        flush(budgeted, wave)
    read_and_expiring(budgeted, READERS)
    full = run_jobs(budgeted)
    # When 10 keys change, then 100 keys (their users read, so cached), each followed by a run of every job
    runs = {}
    for n in (10, 100):
        batch = changes(n, f"keys{n}")
        send(budgeted, batch)
        flush(budgeted, batch)
        read_and_expiring(budgeted, [*READERS, *(1000 + i for i in range(n))])
        runs[n] = run_jobs(budgeted)
    print(f"{SHAPE}: job statements: full {full}; after 10 changed keys {runs[10]}; after 100 {runs[100]}")
    # Then the runs after the changes were incremental where a job has such runs
    for name, run in runs[100].items():
        assert "full" not in run.mode, f"{name} ran in full after 100 changed keys: {run.mode}"
    # And a run costs the same statements whether 10 or 100 keys changed
    for name in registry.JOBS:
        ten, hundred = runs[10][name], runs[100][name]
        assert hundred.statements == ten.statements, (
            f"{name}: {ten.statements} statements after 10 changed keys, {hundred.statements} after 100: its "
            f"statements grow with the changes of a run.\n10 keys: {ten.sent}\n100 keys: {hundred.sent}"
        )
    # And each job's statements, its first run and a run after the changes, are its budget
    for name in registry.JOBS:
        check(
            (full[name].statements, runs[100][name].statements),
            JOB_STATEMENTS_BUDGET.get(name),
            f"JOB_STATEMENTS_BUDGET[{name!r}]",
            f"{name}: ClickHouse statements of its first run and of a run after the changes {runs[100][name].sent}",
        )
