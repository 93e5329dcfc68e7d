"""The metrics snapshot (``snapshot_user_metrics`` and the miss path that reads it): for any history, split
around full and incremental runs, with redeliveries, exclusions before and after, every user served on a miss
equals the oracle; users with rows after the last run, or whose counting events left the window, are computed in
full; unchanged users come from the snapshot."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.derived import changelog
from app.jobs import metrics_snapshot as snapshot_job
from app.jobs.metrics_snapshot import snapshot_metrics
from app.read.metrics_miss import current_user_metrics, from_snapshot
from app.stores.clickhouse import insert_events
from app.stores.runtime import Runtime
from app.write.excluded import set_excluded
from bench.oracle import E
from tests.integration.test_read_properties import USERS, an_event, assert_metrics, oracle_at, to_event, users
from tests.properties import examples
from tests.stack import wipe_clickhouse


@pytest.fixture()
def no_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    """No look-back margin: the embedded engine has no insert in flight, and a test's rows all arrive within
    seconds of a run (with the 10 s margin every user would count as changed and nothing came from the snapshot)."""
    monkeypatch.setattr(changelog, "INFLIGHT_MARGIN", timedelta(0))


def _touched(events: list[E]) -> set[int]:
    return {u for e in events for u in (e.user_id, e.owner_id)}


@settings(max_examples=examples(25), deadline=None, suppress_health_check=list(HealthCheck))
@given(history=st.lists(an_event(), min_size=1, max_size=40, unique_by=lambda e: e.event_id), data=st.data())
def test_misses_served_from_the_snapshot_match_the_oracle(clean, no_margin, history, data):  # type: ignore[no-untyped-def]
    clean.redis.flushdb()
    wipe_clickhouse(clean)
    dupes = data.draw(st.lists(st.sampled_from(history), max_size=10))
    delivery = data.draw(st.permutations(history + dupes))
    a, b = sorted(data.draw(st.lists(st.integers(0, len(delivery)), min_size=2, max_size=2)))
    first, middle, last = delivery[:a], delivery[a:b], delivery[b:]
    excluded = set(data.draw(st.lists(users, max_size=1), label="excluded before"))
    set_excluded(clean, excluded, excluded=True, reason="test")
    insert_events(clean.clickhouse, [to_event(e) for e in first])
    assert snapshot_metrics(clean).mode == "full"
    insert_events(clean.clickhouse, [to_event(e) for e in middle])
    if data.draw(st.booleans(), label="incremental run"):
        report = snapshot_metrics(clean)
        assert report.mode == "incremental" and report.changed >= len(_touched(middle) & set(USERS))
        pending = last
    else:
        pending = middle + last
    insert_events(clean.clickhouse, [to_event(e) for e in last])
    later = set(data.draw(st.lists(users, max_size=1), label="excluded after")) - excluded
    if later:
        set_excluded(clean, later, excluded=True, reason="after the snapshot")
        excluded |= later

    served, rest = from_snapshot(clean, list(USERS))
    assert _touched(pending) & set(USERS) <= set(rest)  # what arrived since the last run is never served stale
    if later:
        assert not served  # the excluded set changed: nothing from the snapshot
    elif not pending:
        assert not rest  # nothing changed: everything from the snapshot
    oracle = oracle_at(history, datetime.now(UTC), excluded)
    got = current_user_metrics(clean, list(USERS))
    for uid in USERS:
        assert_metrics(got[uid].to_json(), oracle.metrics(uid), ("snapshot", uid, uid in served))


def test_the_score_drops_on_schedule_as_counting_events_leave_the_window(
    clean: Runtime, no_margin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download counted in the engagement window leaves it two seconds after the run: the row lists that drop,
    and from then on the served score is without it, still from the snapshot. Past the row's horizon the user is
    computed in full, and the next run writes a new row."""
    rt, owner = clean, 3
    monkeypatch.setattr(rt, "settings", rt.settings.model_copy(update={"snapshot_horizon_s": 4.0}))
    edge = datetime.now(UTC) - rt.window + timedelta(seconds=2)
    inside = E(str(uuid.uuid4()), "Model", 200, 1, owner, "Download", 1, edge)
    later = E(str(uuid.uuid4()), "Model", 200, 2, owner, "Download", 2, edge + timedelta(days=1))
    insert_events(rt.clickhouse, [to_event(inside), to_event(later)])
    assert snapshot_metrics(rt).mode == "full"
    served, rest = from_snapshot(rt, [owner])
    assert rest == [] and served[owner].engagement_score == 3  # 1 + 2 (Download weight 1)
    time.sleep(2.5)  # the first download leaves the window
    served, rest = from_snapshot(rt, [owner])
    assert rest == [] and served[owner].engagement_score == 2 and served[owner].download_count == 3
    assert current_user_metrics(rt, [owner])[owner].engagement_score == 2
    time.sleep(2.0)  # past the row's horizon: computed in full until the next run
    assert from_snapshot(rt, [owner]) == ({}, [owner])
    assert current_user_metrics(rt, [owner])[owner].engagement_score == 2
    report = snapshot_metrics(rt)
    assert report.mode == "incremental" and report.users == 1
    served, rest = from_snapshot(rt, [owner])
    assert rest == [] and served[owner].engagement_score == 2


def test_an_interrupted_full_run_resumes_and_readers_wait_for_it(
    clean: Runtime, no_margin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full run that runs out of its budget stops after a batch; readers do not use the snapshot until a later
    run has finished it, from where it stopped."""
    rt = clean
    now = datetime.now(UTC) - timedelta(hours=1)
    insert_events(
        rt.clickhouse,
        [to_event(E(str(uuid.uuid4()), "User", u, 1, u, "Follow", 1, now)) for u in range(2, 7)],
    )
    monkeypatch.setattr(snapshot_job, "USERS_PER_QUERY", 2)
    monkeypatch.setattr(changelog, "BUDGET_SHARE", 0.0)  # out of budget after the first batch
    assert snapshot_metrics(rt).mode == "full (to be resumed)"
    assert from_snapshot(rt, [2, 3]) == ({}, [2, 3])
    monkeypatch.setattr(changelog, "BUDGET_SHARE", 0.8)
    report = snapshot_metrics(rt)
    assert report.mode == "full" and report.users == 4  # users 1..6 minus the first batch (1, 2)
    served, rest = from_snapshot(rt, [1, 2, 6, 7])
    assert rest == [] and served[2].follower_count == 1 and served[1].following_count == 5
    assert served[7].follower_count == 0


def test_a_snapshot_table_lost_under_a_ready_state_is_not_read_as_users_with_nothing(
    clean: Runtime, no_margin: Any
) -> None:
    """The table is emptied (a replaced server, a dropped table migrated again) while the job's state still says
    ready: readers must compute, not serve zeros for the users without a row."""
    rt = clean
    at = datetime.now(UTC) - timedelta(hours=1)
    insert_events(rt.clickhouse, [to_event(E(str(uuid.uuid4()), "User", 2, 1, 2, "Follow", 1, at))])
    assert snapshot_metrics(rt).mode == "full"
    assert from_snapshot(rt, [1, 2])[0][2].follower_count == 1
    rt.clickhouse.truncate("userMetricsSnapshot")
    assert from_snapshot(rt, [1, 2]) == ({}, [1, 2])
    assert current_user_metrics(rt, [2])[2].follower_count == 1
    assert snapshot_metrics(rt).mode == "full"  # the job sees it too, and rebuilds
    assert from_snapshot(rt, [2])[0][2].follower_count == 1


def test_a_bulk_of_changed_users_makes_the_run_full(
    clean: Runtime, no_margin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill changes most users at once: the run goes full (budgeted and resumable) instead of incremental."""
    rt = clean
    at = datetime.now(UTC) - timedelta(hours=1)
    assert snapshot_metrics(rt).mode == "full"
    monkeypatch.setattr(snapshot_job, "INCREMENTAL_MAX_USERS", 2)
    insert_events(rt.clickhouse, [to_event(E(str(uuid.uuid4()), "User", 2, 1, 2, "Follow", 1, at))])
    assert snapshot_metrics(rt).mode == "incremental"  # two users changed
    insert_events(rt.clickhouse, [to_event(E(str(uuid.uuid4()), "User", u, 1, u, "Follow", 1, at)) for u in (3, 4)])
    assert snapshot_metrics(rt).mode == "full"  # three
    assert from_snapshot(rt, [1, 2, 3, 4])[0][1].following_count == 3
