"""The changelog: every row the log takes is also listed in ``eventArrivals`` (sql/0006) with the engine's time of
its insert (``insertedAt``). A job that keeps a derived table takes, at each run, the slice of the changelog since
its last run and recomputes only the keys in it; readers compare a key's latest arrival with the position up to
which a derived table is exact.

``run_on_changelog`` is the one shape of such a run, for every job that keeps a derived table: read the engine's
clock and the excluded set, end the slice before any insert still landing, then run incrementally over the slice,
or in full when the job must (no position, the slice start expired, the job's own inputs changed) or is asked to.
``FullRun`` is a full run over a key range that survives its time budget and interruptions: it resumes from the
last range written.
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from app.core.events import as_utc
from app.derived.job_state import JobReport, save_state
from app.stores.clickhouse import ClickHouse
from app.stores.runtime import Runtime

INFLIGHT_MARGIN = timedelta(seconds=10)  # inserts stamped this long before a run may still be landing
ARRIVALS_KEPT = timedelta(days=6)  # eventArrivals keeps 7 (sql/0006)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BUDGET_SHARE = 0.8  # of JOB_TIME_LIMIT_S, after which a full run stops and resumes in the next run

# The effective excluded set, as an order-free fingerprint (and its size): any change to the set changes it, whatever
# time a writer stamped on the change (``max(changedAt)`` missed a change stamped at or below the current maximum).
_FINGERPRINT = "toString(groupBitXor(cityHash64(userId))) || '/' || toString(count())"
EXCLUDED_FINGERPRINT_SQL = f"SELECT {_FINGERPRINT} AS fp FROM excludedUsers FINAL WHERE excluded = 1"  # noqa: S608
# With the engine's clock, which bounds the changelog slice of a run.
EXCLUDED_SET_SQL = f"SELECT {_FINGERPRINT}, now64(3, 'UTC') FROM excludedUsers FINAL WHERE excluded = 1"  # noqa: S608
# Server mode: how long the oldest insert still running has been running (0 when none). Its rows are stamped when
# it started but land as it goes: a run's slice must end before that start, or a later run would look back too
# little to see them (the embedded engine runs one statement at a time: no insert is ever in flight during a run).
# Inserts of other databases on the same server (another deployment) do not hold this one back.
INFLIGHT_INSERT_AGE_SQL = """
SELECT coalesce(maxOrNull(elapsed), 0) FROM system.processes
WHERE query_kind = 'Insert' AND current_database = currentDatabase()
"""


def slice_end(ch: ClickHouse, engine_now: datetime) -> datetime:
    """Where this run's changelog slice ends, on the engine's clock: now, or just before the start of the oldest
    insert still running (server mode), whose rows carry its start time but are not all visible yet."""
    if ch.embedded:
        return engine_now
    sql = INFLIGHT_INSERT_AGE_SQL
    if ch.cluster is not None:  # an insert may be running on any node
        sql = sql.replace("FROM system.processes", f"FROM clusterAllReplicas('{ch.cluster.name}', system.processes)")
    running_s = float(ch.rows(sql)[0][0])
    return engine_now - timedelta(seconds=running_s, milliseconds=1) if running_s > 0 else engine_now


@dataclass(frozen=True)
class Slice:
    """One run's share of the changelog: rows with ``insertedAt`` in ``(after, until]``; ``after`` is where the
    last run's slice ended, less ``INFLIGHT_MARGIN`` (``EPOCH`` when there was no run)."""

    after: datetime
    until: datetime
    excluded_set: str
    engine_now: datetime

    @property
    def next_after(self) -> datetime:
        """Where the next run's slice starts: inserts stamped up to a few seconds before ``until`` may still be
        landing, so the next run looks back a little (reprocessing a key is harmless)."""
        return self.until - INFLIGHT_MARGIN

    def params(self) -> dict[str, datetime]:
        return {"after": self.after, "until": self.until}


def save_position(rt: Runtime, job: str, after: datetime, now: datetime, **extra: str | int) -> None:
    """Record in ``job``'s state where its next slice starts (``inserted_after``) and the run's clock."""
    save_state(rt.redis, job, {"inserted_after": after.isoformat(), "now": now.isoformat(), **extra})


class ChangelogJob(ABC):
    """A job keeping a derived table: where its last slice ended, when it must run in full, and its two runs.

    ``state`` is the job's state as the run found it (``job_state.load_state``); a job that keeps its position
    elsewhere (the timeline, in its table) overrides ``position``."""

    name: str
    state: Mapping[str, str]

    def position(self, rt: Runtime, engine_now: datetime) -> datetime | None:
        """The start of this run's slice (the last slice's end less the margin); None: no usable position."""
        after = self.state.get("inserted_after")
        return datetime.fromisoformat(after) if after else None

    def stale(self, rt: Runtime, run: Slice) -> bool:
        """True when the table no longer describes the log (its inputs changed, it was lost): run in full."""
        return False

    @abstractmethod
    def incremental(self, rt: Runtime, run: Slice) -> JobReport | None:
        """Recompute the keys of the slice; None when there are too many (a full run is then cheaper)."""

    @abstractmethod
    def full(self, rt: Runtime, run: Slice) -> JobReport:
        """Recompute every key."""


def run_on_changelog(rt: Runtime, job: ChangelogJob, full: bool | None = None) -> JobReport:
    """One run of ``job``: incremental over the changelog slice since its last run, or full when it must or when
    ``full`` asks for it. The report's ``seconds`` cover the whole run."""
    started = time.perf_counter()
    excluded_set, engine_now = rt.clickhouse.rows(EXCLUDED_SET_SQL)[0]
    engine_now = as_utc(engine_now)
    until = slice_end(rt.clickhouse, engine_now)
    after = job.position(rt, engine_now)
    run = Slice(after if after is not None else EPOCH, until, str(excluded_set), engine_now)
    must = after is None or after < until - ARRIVALS_KEPT or job.stale(rt, run)  # arrivals since then are gone
    report = None if (must or full) else job.incremental(rt, run)
    if report is None:
        report = job.full(rt, run)
    return replace(report, seconds=time.perf_counter() - started)


@dataclass
class FullRun:
    """A full run over a key range, resumable: the job, the slice end it started at, the last key written, and the
    generation it writes (a new one unless it resumed an interrupted run)."""

    job: str
    until: datetime
    cursor: int
    generation: int

    @classmethod
    def begin(
        cls, rt: Runtime, job: ChangelogJob, run: Slice, *, resume: bool, inputs: Mapping[str, str] | None = None
    ) -> FullRun:
        """Resume the interrupted full run ``job.state`` describes when ``resume`` and it was computed with the
        same ``inputs``, else start one (recorded before anything is written)."""
        state, inputs = job.state, dict(inputs or {})
        if (
            resume
            and state.get("ready") == "0"
            and "full_next" in state
            and all(state.get(k) == v for k, v in inputs.items())
        ):
            return cls(
                job.name, datetime.fromisoformat(state["full_until"]), int(state["full_next"]), int(state["generation"])
            )
        generation = secrets.randbits(62) + 1
        save_state(
            rt.redis,
            job.name,
            {"ready": 0, "full_next": 0, "full_until": run.until.isoformat(), "generation": generation, **inputs},
        )
        return cls(job.name, run.until, 0, generation)

    def advance(self, rt: Runtime, steps: Iterable[tuple[int, int, bool]], started: float) -> tuple[bool, int]:
        """Drive ``steps`` (each writes one range and yields its last key, how much it wrote, and whether it was the
        last range), recording the cursor after each; stop once the job's time budget from ``started``
        (``time.perf_counter``) is spent. Returns whether the run finished, and how much was written."""
        deadline = started + rt.settings.job_time_limit_s * BUDGET_SHARE
        written = 0
        for cursor, count, last in steps:
            self.cursor = cursor
            written += count
            save_state(rt.redis, self.job, {"full_next": cursor})
            if not last and time.perf_counter() > deadline:
                return False, written
        return True, written

    @property
    def next_after(self) -> datetime:
        """Where the slice after this full run starts: where the full run's own slice ended, less the margin."""
        return self.until - INFLIGHT_MARGIN

    def finish(self, rt: Runtime, now: datetime) -> None:
        """Mark the run done: the next slice starts where this run's did (keys that arrived since it began were
        written after their arrival, or will be by the next run)."""
        save_position(rt, self.job, self.next_after, now, ready=1)
