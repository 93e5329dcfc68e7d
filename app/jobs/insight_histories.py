"""The insights' histories (``app.insights.histories``, sql/0013), kept on the changelog like the snapshots.

Each run rewrites, whole, the row of every follow key and every reaction key with a row in the changelog slice
since the last run (one ``INSERT ... SELECT`` per table, inside the engine: each key from all its events), then
writes the cut both tables are exact up to. A full run (first run, the position lost or expired, a table without
its cut) rewrites every key. Excluded users are left out by readers, so a change of the excluded set rebuilds
nothing.
"""

from __future__ import annotations

from app.derived.changelog import ChangelogJob, Slice, run_on_changelog, save_position
from app.derived.job_state import JobReport, load_state
from app.derived.job_state import now as clock
from app.insights import histories
from app.stores.runtime import Runtime

JOB = "insight_histories"

ARRIVED_SQL = f"""
SELECT count() FROM eventArrivals
WHERE {histories.SLICE} AND (metricType = 'Follow' OR metricType IN {histories.REACTIONS})
"""  # noqa: S608


class InsightHistories(ChangelogJob):
    """The follow and reaction histories on the changelog (see the module's text)."""

    name = JOB

    def __init__(self, rt: Runtime) -> None:
        self.now = clock(rt)
        self.state = load_state(rt.redis, JOB)

    def stale(self, rt: Runtime, run: Slice) -> bool:
        cuts = histories.read_cuts(rt.clickhouse)
        return histories.FOLLOWS_TABLE not in cuts or histories.REACTIONS_TABLE not in cuts

    def incremental(self, rt: Runtime, run: Slice) -> JobReport:
        ch = rt.clickhouse
        arrived = int(ch.rows(ARRIVED_SQL, run.params())[0][0])
        if arrived:
            self._write(rt, run, histories.FOLLOW_SLICE_KEYS, histories.REACTION_SLICE_KEYS)
        return self._finish(rt, run, "incremental", arrived)

    def full(self, rt: Runtime, run: Slice) -> JobReport:
        self._write(rt, run, "1", "1")
        return self._finish(rt, run, "full", 0)

    def _write(self, rt: Runtime, run: Slice, follow_keys: str, reaction_keys: str) -> None:
        ch, params = rt.clickhouse, {**run.params(), "version": _version(run)}
        ch.command(histories.FOLLOW_BUILD_SQL.replace("{keys}", follow_keys), params)
        ch.command(histories.REACTION_BUILD_SQL.replace("{keys}", reaction_keys), params)

    def _finish(self, rt: Runtime, run: Slice, mode: str, changed: int) -> JobReport:
        histories.write_cuts(rt.clickhouse, run.next_after, _version(run))
        save_position(rt, JOB, run.next_after, self.now)
        return JobReport(JOB, mode, changed=changed)


def _version(run: Slice) -> int:
    """Rows of a later run win: the run's engine time, in ms (runs never overlap: the job's lock)."""
    return int(run.engine_now.timestamp() * 1000)


def update_insight_histories(rt: Runtime, full: bool | None = None) -> JobReport:
    """One run (see the module's text); ``full`` forces a full run."""
    return run_on_changelog(rt, InsightHistories(rt), full)
