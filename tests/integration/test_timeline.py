"""Property: history read from the hourly timeline (``metricTimeline``) is the oracle's, whether the keys come from
the table's cells, from the correction of keys that changed since its cut, or from an incremental run; and an
incremental run leaves the table exactly as a rebuild from the whole log would.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import app.read.history as history_module
from app.core import failpoints
from app.derived import changelog
from app.jobs.timeline import update_timeline
from app.read.history import metric_history
from app.stores.clickhouse import insert_events
from app.write.excluded import set_excluded
from bench.oracle import E
from tests.integration.test_read_properties import NOW, USERS, an_event, oracle_at, to_event, users
from tests.properties import examples
from tests.stack import wipe_clickhouse

STATE_METRICS = ("followerCount", "followingCount", "modelCount", "imageCount", "uploadCount", "reactionCount")
CELLS_SQL = """
SELECT subject, metric, kind, hour, delta FROM metricTimeline FINAL WHERE kind IN ('cell', 'day') AND delta != 0
ORDER BY ALL
"""
KEYS_SQL = """
SELECT subject, metric, keyType, entityType, entityId, actor, hour, delta FROM metricTimeline FINAL
WHERE kind = 'key' AND delta != 0 ORDER BY ALL
"""


def check_history(rt: Any, history: list[Any], excluded: set[int], context: str) -> None:
    start, end = NOW - timedelta(days=62), NOW
    day_ends = [
        min(start.replace(hour=0, minute=0, second=0) + timedelta(days=i + 1, milliseconds=-1), end) for i in range(63)
    ]
    expected = [oracle_at(history, at, excluded) for at in day_ends]
    for uid in USERS:
        for metric in STATE_METRICS:
            points = metric_history(rt.clickhouse, uid, metric, start, end, "day")
            for point, past in zip(points, expected, strict=True):
                assert point.value == past.metrics(uid).get(metric, 0), (context, metric, uid, point)
    # Hour buckets over the last day (the hour of ``end`` is read from the log, the ones before from the cells)
    hour_start = NOW - timedelta(hours=30)
    hour_ends = [
        min(hour_start.replace(minute=0, second=0) + timedelta(hours=i + 1, milliseconds=-1), NOW) for i in range(31)
    ]
    hourly = [oracle_at(history, at, excluded) for at in hour_ends]
    for uid in USERS:
        points = metric_history(rt.clickhouse, uid, "reactionCount", hour_start, NOW, "hour")
        for point, past in zip(points, hourly, strict=True):
            assert point.value == past.metrics(uid).get("reactionCount", 0), (context, "hourly", uid, point)


@settings(max_examples=examples(15), deadline=None, suppress_health_check=list(HealthCheck))
@given(history=st.lists(an_event(), min_size=1, max_size=40, unique_by=lambda e: e.event_id), data=st.data())
def test_history_from_the_timeline_matches_the_oracle(clean, history, data):  # type: ignore[no-untyped-def]
    wipe_clickhouse(clean)
    dupes = data.draw(st.lists(st.sampled_from(history), max_size=10))
    delivery = data.draw(st.permutations(history + dupes))
    cut = data.draw(st.integers(0, len(delivery)))
    excluded = set(data.draw(st.lists(users, max_size=1)))
    exclude_first = data.draw(st.booleans())
    # Given part of the events and a timeline built from them
    insert_events(clean.clickhouse, [to_event(e) for e in delivery[:cut]])
    if exclude_first:
        set_excluded(clean, excluded, excluded=True, reason="test")
    assert update_timeline(clean).mode == "rebuild"
    # When the rest arrives after its cut (and, in some examples, the excluded set changes: readers use the raw log)
    insert_events(clean.clickhouse, [to_event(e) for e in delivery[cut:]])
    if not exclude_first:
        set_excluded(clean, excluded, excluded=True, reason="test")
    # Then history, with the newer keys read from the log, is the oracle's
    served = history_module._timeline_deltas(clean.clickhouse, USERS[0], "reactionCount", NOW, NOW, "day") is not None
    assert served == (exclude_first or not excluded)  # a changed excluded set is read from the raw log
    check_history(clean, history, excluded, "corrected")
    # And after the next run, read from the cells alone (no in-flight margin: no key counts as changed)
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(changelog, "INFLIGHT_MARGIN", timedelta(0))
        mp.setattr(history_module, "INFLIGHT_MARGIN", timedelta(0))
        changed_set = bool(excluded) and not exclude_first
        assert update_timeline(clean).mode == ("rebuild" if changed_set else "incremental")
        assert history_module._timeline_deltas(clean.clickhouse, USERS[0], "reactionCount", NOW, NOW, "day") is not None
        check_history(clean, history, excluded, "cells")
    finally:
        mp.undo()
    # And the incremental run left what a rebuild from the whole log writes
    cells, keys = clean.clickhouse.rows(CELLS_SQL), clean.clickhouse.rows(KEYS_SQL)
    assert update_timeline(clean, full=True).mode == "rebuild"
    assert clean.clickhouse.rows(CELLS_SQL) == cells
    assert clean.clickhouse.rows(KEYS_SQL) == keys


def _events(n: int, first: int, hours_back: int) -> list[E]:
    """``n`` reactions on user 1's image 100 by users 2..4, and follows of user 1, ``hours_back`` hours ago."""
    out = []
    for i in range(n):
        at = NOW - timedelta(hours=hours_back, minutes=i)
        event_id = f"00000000-0000-4000-8000-{first + i:012d}"
        if i % 2:
            out.append(E(event_id, "User", 1, 2 + i % 3, 1, "Follow", 1 if i % 3 else -1, at))
        else:
            out.append(E(event_id, "Image", 100, 2 + i % 3, 1, "ReactionLike", 1 if i % 4 else -1, at))
    return out


def test_a_run_that_dies_before_its_insert_leaves_the_table_as_it_was(clean):  # type: ignore[no-untyped-def]
    first, later = _events(6, 0, 40), _events(6, 100, 3)
    insert_events(clean.clickhouse, [to_event(e) for e in first])
    update_timeline(clean)
    insert_events(clean.clickhouse, [to_event(e) for e in later])
    before = clean.clickhouse.rows(KEYS_SQL), clean.clickhouse.rows(CELLS_SQL)

    def die() -> None:
        raise RuntimeError("worker killed")

    # Given a run that dies after computing its rows, before its insert
    with failpoints.armed(failpoints.TIMELINE_BEFORE_INSERT, die), pytest.raises(RuntimeError):
        update_timeline(clean)
    # Then the table is as it was, history is still exact (the keys since the cut are read from the log)
    assert (clean.clickhouse.rows(KEYS_SQL), clean.clickhouse.rows(CELLS_SQL)) == before
    check_history(clean, first + later, set(), "after the crash")
    # And the next run does the work, leaving what a rebuild leaves
    assert update_timeline(clean).mode == "incremental"
    check_history(clean, first + later, set(), "after the next run")
    after = clean.clickhouse.rows(KEYS_SQL), clean.clickhouse.rows(CELLS_SQL)
    update_timeline(clean, full=True)
    assert (clean.clickhouse.rows(KEYS_SQL), clean.clickhouse.rows(CELLS_SQL)) == after


def test_rows_landing_during_a_run_are_taken_by_the_next(clean):  # type: ignore[no-untyped-def]
    first, during = _events(8, 0, 30), _events(8, 200, 30)  # the same keys, changed again
    insert_events(clean.clickhouse, [to_event(e) for e in first])
    update_timeline(clean)
    insert_events(clean.clickhouse, [to_event(e) for e in _events(4, 300, 5)])

    def rows_land_now() -> None:
        insert_events(clean.clickhouse, [to_event(e) for e in during])

    # Given rows of keys the run already read, landing between its read and its insert
    with failpoints.armed(failpoints.TIMELINE_BEFORE_INSERT, rows_land_now):
        update_timeline(clean)
    everything = first + during + _events(4, 300, 5)
    # Then history is exact at once (they arrived after the run's cut), and after the next run
    check_history(clean, everything, set(), "after the race")
    update_timeline(clean)
    check_history(clean, everything, set(), "after the next run")
    after = clean.clickhouse.rows(KEYS_SQL), clean.clickhouse.rows(CELLS_SQL)
    update_timeline(clean, full=True)
    assert (clean.clickhouse.rows(KEYS_SQL), clean.clickhouse.rows(CELLS_SQL)) == after
