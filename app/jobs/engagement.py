"""``recompute_engagement``: the engagement score of every user with activity in the window, as the sum of per-key
contributions (``engagementContrib``). A full run rebuilds them from the log's window; an incremental run merges
only the rows that arrived since (``eventArrivals``) into the stored latest events of their keys, zeroes keys whose
latest event left the window and moves each owner's score by the difference. Full every ``ENGAGEMENT_FULL_EVERY``
runs and whenever it must (first run, excluded users or weights changed, an interrupted run, arrivals expired).
Scores live in ``engagementCurrent`` (a view keeps the trend in ``engagementTrend``) and go into cached hashes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from app.core import failpoints
from app.core.errors import TransientError
from app.core.events import as_utc
from app.core.metrics import ADDITIVE, EXCLUDED_USERS_SQL, OWNER_STATE_TYPES_SQL, SCORE_SCALE, WEIGHT_SQL, format_score
from app.jobs import engagement_sql as q
from app.jobs.report import JobReport, load_state, save_state, set_field_if_cached
from app.jobs.report import now as clock
from app.stores.clickhouse import ClickHouse
from app.stores.runtime import Runtime

INFLIGHT_MARGIN = timedelta(seconds=10)  # inserts stamped this long before a run may still be landing
ARRIVALS_KEPT = timedelta(days=6)  # eventArrivals keeps 7 (sql/0006)
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


def _incremental_engagement(
    rt: Runtime, now: datetime, stamp: datetime, until: datetime, state: Mapping[str, str]
) -> Scores | None:
    """Recompute the changed keys only and move their owners' scores by the difference; None: too many changes."""
    ch = rt.clickhouse
    failovers = ch.failovers
    params: dict[str, Any] = {
        "since": now - rt.window,
        "stamp": stamp,
        "additive": ADDITIVE,
        "inserted_after": datetime.fromisoformat(state["inserted_after"]),
        "arrived_until": until,
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
    mark_phase(rt, "writing")  # a crash from here on leaves scores and contributions apart: the next run is full
    ch.command(q.WRITE_SQL, params)
    return {o: previous.get(o, 0) + delta[o] for o in touched}, set(touched), previous


def mark_phase(rt: Runtime, phase: str) -> None:
    """Record the phase of the contributions (``writing`` until a run has written scores and contributions)."""
    save_state(rt.redis, "engagement", {"contrib": phase})


def slice_end(ch: ClickHouse, engine_now: datetime) -> datetime:
    """Where this run's changelog slice ends, on the engine's clock: now, or just before the start of the oldest
    insert still running (server mode), whose rows carry its start time but are not all visible yet."""
    if ch.embedded:
        return engine_now
    sql = q.INFLIGHT_INSERT_AGE_SQL
    if ch.cluster is not None:  # an insert may be running on any node
        sql = sql.replace("FROM system.processes", f"FROM clusterAllReplicas('{ch.cluster.name}', system.processes)")
    running_s = float(ch.rows(sql)[0][0])
    return engine_now - timedelta(seconds=running_s, milliseconds=1) if running_s > 0 else engine_now


def take_stamp(ch: ClickHouse, now: datetime) -> datetime:
    """This run's version for what it writes: ``now``, or just above the newest earlier stamp or stored score when
    the clock stepped back (one run at a time: the job lock), recorded before anything is written."""
    stamp = as_utc(ch.rows(q.STAMP_SQL, {"now": now})[0][0])
    ch.insert("engagementRuns", [(stamp, now)], ["stamp", "clockAt"])
    return stamp


def recompute_engagement(rt: Runtime, full: bool | None = None) -> JobReport:
    """Engagement scores for the window. ``full=None`` decides; ``False`` still runs full when it must (first run,
    excluded users or weights changed, contributions not in step with the scores after an interrupted run)."""
    started = time.perf_counter()
    r, ch = rt.redis, rt.clickhouse
    now = clock(rt)
    state = load_state(r, "engagement")
    runs = int(state.get("runs", 0))
    excluded_set, engine_now = ch.rows(q.EXCLUDED_SET_SQL)[0]
    until = slice_end(ch, as_utc(engine_now))
    weights = json.dumps(rt.weights.params(), sort_keys=True, default=str)
    must = (
        not state
        or state.get("contrib") != "ok"
        or state.get("excluded_set") != excluded_set
        or state.get("weights") != weights
        or datetime.fromisoformat(state.get("inserted_after", "1970-01-01T00:00:00+00:00"))
        < until - ARRIVALS_KEPT  # arrivals since then are gone
    )
    if full is None:
        full = must or runs % rt.settings.engagement_full_every == 0
    full = full or must
    stamp = take_stamp(ch, now)
    result = None if full else _incremental_engagement(rt, now, stamp, until, state)
    if result is None:
        full = True
        mark_phase(rt, "writing")
        scores, considered, previous = _full_engagement(rt, now, stamp)
    else:
        scores, considered, previous = result
    changed = {u: scores.get(u, 0) for u in considered if scores.get(u, 0) != previous.get(u, 0)}
    cached = _record_scores(rt, changed, stamp)
    save_state(
        r,
        "engagement",
        {
            "runs": runs + 1,
            "now": now.isoformat(),
            # Inserts stamped up to a few seconds before now may still be landing; look back a little next time.
            "inserted_after": (until - INFLIGHT_MARGIN).isoformat(),
            "excluded_set": excluded_set,
            "weights": weights,
            "contrib": "ok",
        },
    )
    return JobReport(
        "recompute_engagement",
        "full" if full else "incremental",
        users=len(considered),
        changed=len(changed),
        cached_updated=cached,
        seconds=time.perf_counter() - started,
    )


def _record_scores(rt: Runtime, changed: Mapping[int, int], stamp: datetime) -> int:
    """Store changed scores (current table, and through engagementTrendMv the trend; cached hashes)."""
    if not changed:
        return 0
    rows = [(u, s, stamp) for u, s in changed.items()]
    rt.clickhouse.insert("engagementCurrent", rows, ["userId", "score", "computedAt"])
    return set_field_if_cached(
        rt.redis, "engagementScore", {u: format_score(Decimal(s) / SCORE_SCALE) for u, s in changed.items()}
    )
