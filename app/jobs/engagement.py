"""``recompute_engagement``: the engagement score of every user with activity in the window, as the sum of per-key
contributions (``engagementContrib``). A full run rebuilds them from the log's window; an incremental run merges
only the rows that arrived since (``eventArrivals``) into the stored latest events of their keys, zeroes keys whose
latest event left the window and moves each owner's score by the difference. Full every ``ENGAGEMENT_FULL_EVERY``
runs and whenever it must (first run, excluded users or weights changed, an interrupted run, arrivals expired).
Scores live in ``engagementCurrent`` (a view keeps the trend in ``engagementTrend``) and go into cached hashes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from app.caches.metrics_cache import set_field_if_cached
from app.core import failpoints
from app.core.errors import TransientError
from app.core.events import as_utc
from app.core.metrics import ADDITIVE, EXCLUDED_USERS_SQL, OWNER_STATE_TYPES_SQL, SCORE_SCALE, WEIGHT_SQL, format_score
from app.derived.changelog import ChangelogJob, Slice, run_on_changelog, save_position
from app.derived.job_state import JobReport, load_state, save_state
from app.derived.job_state import now as clock
from app.jobs import engagement_sql as q
from app.stores.clickhouse import ClickHouse
from app.stores.locks import ensure_held
from app.stores.redis_store import server_time_us
from app.stores.runtime import Runtime

# Past this many changed keys an incremental run is no cheaper than a full one.
INCREMENTAL_MAX_KEYS = 500_000


def _sql(template: str) -> str:
    return template.format(weight=WEIGHT_SQL, state_types=OWNER_STATE_TYPES_SQL, excluded=EXCLUDED_USERS_SQL)


Scores = tuple[dict[int, int], set[int], dict[int, int]]  # new scores, owners considered, their previous scores


def _full_engagement(rt: Runtime, now: datetime, stamp: datetime) -> Scores:
    """Rebuild every key's contribution; returns the new scores and every owner to consider."""
    ch = rt.clickhouse
    params: dict[str, Any] = {"since": now - rt.window, "stamp": stamp, "additive": ADDITIVE, **rt.weights.params()}
    ch.truncate("engagementContrib")
    ch.command(_sql(q.FULL_SQL), params)
    scores = {int(o): int(s) for o, s in ch.rows(q.SCORES_FROM_CONTRIB_SQL)}
    previous = {int(u): int(s) for u, s in ch.rows(q.CURRENT_SCORES_SQL)}
    return scores, set(scores) | set(previous), previous


def _incremental_engagement(rt: Runtime, now: datetime, stamp: datetime, run: Slice) -> Scores | None:
    """Recompute the changed keys only and move their owners' scores by the difference; None: too many changes."""
    ch = rt.clickhouse
    failovers = ch.failovers
    params: dict[str, Any] = {
        "since": now - rt.window,
        "stamp": stamp,
        "additive": ADDITIVE,
        "inserted_after": run.after,
        "arrived_until": run.until,
        **rt.weights.params(),
    }
    for table in ("engagementChanged", "engagementNew", "engagementOld"):
        ch.truncate(table)
    ch.command(_sql(q.CHANGED_KEYS_SQL), params)
    failpoints.hit(failpoints.ENGAGEMENT_MID_RUN)
    if int(ch.rows("SELECT count() FROM engagementChanged")[0][0]) > INCREMENTAL_MAX_KEYS:
        return None
    ch.command(q.OLD_SQL)
    ch.command(_sql(q.NEW_SQL), params)
    rows = ch.rows(q.DELTA_SQL)
    delta = {int(o): int(d) for o, d, _ in rows}
    previous = {int(o): int(p) for o, _, p in rows}
    touched = sorted(delta)
    if ch.failovers != failovers:  # the scratch tables are on the node the run started on
        raise TransientError("the ClickHouse node changed during the run; the next run starts over")
    # A second run beside this one (its lock expired or lost) would add the same deltas again: stop before writing.
    ensure_held()
    mark_phase(rt, "writing")  # a crash from here on leaves scores and contributions apart: the next run is full
    ch.command(q.WRITE_SQL, params)
    return {o: previous.get(o, 0) + delta[o] for o in touched}, set(touched), previous


def mark_phase(rt: Runtime, phase: str) -> None:
    """Record the phase of the contributions (``writing`` until a run has written scores and contributions)."""
    save_state(rt.redis, "engagement", {"contrib": phase})


def take_stamp(ch: ClickHouse, now: datetime) -> datetime:
    """This run's version for what it writes: ``now``, or just above the newest earlier stamp or stored score when
    the clock stepped back (one run at a time: the job lock), recorded before anything is written."""
    stamp = as_utc(ch.rows(q.STAMP_SQL, {"now": now})[0][0])
    ch.insert("engagementRuns", [(stamp, now)], ["stamp", "clockAt"])
    return stamp


class Engagement(ChangelogJob):
    """The engagement job on the changelog (see the module's text)."""

    name = "engagement"

    def __init__(self, rt: Runtime) -> None:
        self.now = clock(rt)
        self.state = load_state(rt.redis, self.name)
        self.runs = int(self.state.get("runs", 0))
        self.weights = json.dumps(rt.weights.params(), sort_keys=True, default=str)
        self.stamp: datetime | None = None
        # Redis time before any query: a cached hash written from a later snapshot keeps its score (the refresher
        # computed it from newer rows; this run's score would take it back until the next run).
        self.cache_version = server_time_us(rt.redis)

    def stale(self, rt: Runtime, run: Slice) -> bool:
        return (
            self.state.get("contrib") != "ok"
            or self.state.get("excluded_set") != run.excluded_set
            or self.state.get("weights") != self.weights
        )

    def incremental(self, rt: Runtime, run: Slice) -> JobReport | None:
        result = _incremental_engagement(rt, self.now, self._stamp(rt), run)
        return None if result is None else self._record(rt, run, "incremental", result)

    def full(self, rt: Runtime, run: Slice) -> JobReport:
        stamp = self._stamp(rt)
        mark_phase(rt, "writing")
        return self._record(rt, run, "full", _full_engagement(rt, self.now, stamp))

    def _stamp(self, rt: Runtime) -> datetime:
        if self.stamp is None:
            self.stamp = take_stamp(rt.clickhouse, self.now)
        return self.stamp

    def _record(self, rt: Runtime, run: Slice, mode: str, result: Scores) -> JobReport:
        scores, considered, previous = result
        ensure_held()
        changed = {u: scores.get(u, 0) for u in considered if scores.get(u, 0) != previous.get(u, 0)}
        cached = _record_scores(rt, changed, self._stamp(rt), self.cache_version)
        save_position(
            rt,
            self.name,
            run.next_after,
            self.now,
            runs=self.runs + 1,
            excluded_set=run.excluded_set,
            weights=self.weights,
            contrib="ok",
        )
        return JobReport(
            "recompute_engagement", mode, users=len(considered), changed=len(changed), cached_updated=cached
        )


def recompute_engagement(rt: Runtime, full: bool | None = None) -> JobReport:
    """Engagement scores for the window. ``full=None`` decides (full every ``ENGAGEMENT_FULL_EVERY`` runs);
    ``False`` still runs full when it must (first run, excluded users or weights changed, contributions not in step
    with the scores after an interrupted run, arrivals expired)."""
    job = Engagement(rt)
    if full is None:
        full = job.runs % rt.settings.engagement_full_every == 0
    return run_on_changelog(rt, job, full)


def _record_scores(rt: Runtime, changed: Mapping[int, int], stamp: datetime, cache_version: int) -> int:
    """Store changed scores (current table, and through engagementTrendMv the trend; cached hashes)."""
    if not changed:
        return 0
    rows = [(u, s, stamp) for u, s in changed.items()]
    rt.clickhouse.insert("engagementCurrent", rows, ["userId", "score", "computedAt"])
    return set_field_if_cached(
        rt.redis,
        "engagementScore",
        {u: format_score(Decimal(s) / SCORE_SCALE) for u, s in changed.items()},
        cache_version,
    )
