"""The reactions snapshot (``snapshot_reactions`` and the miss path that reads it): for any history of reactions,
redelivered and reordered, split around full and incremental runs, every image served on a miss carries the
oracle's flags and the version of the latest event of each bit; images with a reaction after the last run are read
from the latest-state table; unchanged images come from the snapshot. An interrupted full run and a lost table are
never read as users without reactions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.caches.reactions_cache import BIT_OF, NO_VERSION, ReactionSet
from app.core import constants as c
from app.core.events import MetricType
from app.derived import changelog
from app.jobs import reactions_snapshot as job
from app.jobs.derived_tables import snapshot_user_metrics
from app.jobs.reactions_snapshot import snapshot_reactions
from app.read.reactions_miss import complete_reactions, current_reactions, from_snapshot, set_from_snapshot
from app.read.reactions_service import FILLS, UserReactionQueryService, all_reactions, latest_reactions
from app.stores.clickhouse import insert_events
from app.stores.runtime import Runtime
from bench.oracle import E, Oracle
from tests.integration.test_read_properties import REACTION_METRICS, to_event
from tests.integration.test_read_service import down_redis
from tests.properties import examples
from tests.stack import wipe_clickhouse

USERS = (1, 2, 3)
IMAGES = (100, 101, 102, 103)
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture()
def no_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    """No look-back margin: the embedded engine has no insert in flight, and a test's rows all arrive within seconds
    of a run (with the 10 s margin every image would count as changed and nothing came from the snapshot)."""
    monkeypatch.setattr(changelog, "INFLIGHT_MARGIN", timedelta(0))


@st.composite
def a_reaction(draw: Any) -> E:
    image = draw(st.sampled_from(IMAGES))
    # Few distinct seconds: ties on createdAt happen and are broken by eventId.
    at = NOW - timedelta(hours=draw(st.integers(0, 3)), seconds=draw(st.integers(0, 1)))
    metric = draw(st.sampled_from(REACTION_METRICS))
    on = 1 if draw(st.booleans()) else -1
    return E(str(draw(st.uuids())), "Image", image, draw(st.sampled_from(USERS)), 9, metric, on, at)


def _latest_versions(history: list[E]) -> dict[tuple[int, int, int], str]:
    """(user, image, bit) -> the version of its latest event, as the cache writes it (latest createdAt, then id)."""
    out: dict[tuple[int, int, int], tuple[datetime, str]] = {}
    for e in history:
        key = (e.user_id, e.entity_id, BIT_OF[MetricType(e.metric_type)])
        if key not in out or (e.at, e.event_id) > out[key]:
            out[key] = (e.at, e.event_id)
    return {k: f"{int(at.timestamp() * 1000):015d}:{eid}" for k, (at, eid) in out.items()}


def _assert_served(rt: Runtime, history: list[E]) -> None:
    oracle = Oracle(now=datetime.now(UTC), excluded=set())
    oracle.apply_all(history)
    versions = _latest_versions(history)
    for user in USERS:
        states = current_reactions(rt, user, IMAGES)
        assert states == latest_reactions(rt.clickhouse, user, IMAGES)  # the same answer, bit for bit
        for image, bits in states.items():
            assert sum(b.bit for b in bits if b.on) == oracle.reactions(user, image), (user, image)
            for b in bits:
                assert b.version == versions.get((user, image, b.bit), NO_VERSION), (user, image, b)
        # The complete set, from the set row or the latest-state table, carries the same flags and versions
        every = complete_reactions(rt, user, 1000)
        assert every is not None
        assert {i: every.flags.get(i, 0) for i in IMAGES} == {i: oracle.reactions(user, i) for i in IMAGES}
        assert set_bits(every) == {
            (image, b): (int((oracle.reactions(user, image) & b) > 0), versions.get((user, image, b), NO_VERSION))
            for image in {e.entity_id for e in history if e.user_id == user}
            for b in BIT_OF.values()
        }


def set_bits(every: ReactionSet | None) -> dict[tuple[int, int], tuple[int, str]]:
    """(image, bit) -> (on, version) of a complete set's fill arguments."""
    assert every is not None
    out = {}
    for state in every.states:
        image, *parts = state.split("|")
        for i in range(0, len(parts), 3):
            out[(int(image), int(parts[i]))] = (int(parts[i + 1]), parts[i + 2])
    return out


@settings(max_examples=examples(25), deadline=None, suppress_health_check=list(HealthCheck))
@given(history=st.lists(a_reaction(), min_size=1, max_size=40, unique_by=lambda e: e.event_id), data=st.data())
def test_misses_served_from_the_snapshot_match_the_oracle(clean, no_margin, history, data):  # type: ignore[no-untyped-def]
    FILLS.drain()  # an earlier example's reactions fills land before the slate is wiped
    clean.redis.flushdb()  # one fixture for every example: each starts from nothing
    wipe_clickhouse(clean)
    dupes = data.draw(st.lists(st.sampled_from(history), max_size=10))
    delivery = data.draw(st.permutations(history + dupes))
    a, b = sorted(data.draw(st.lists(st.integers(0, len(delivery)), min_size=2, max_size=2)))
    first, middle, last = delivery[:a], delivery[a:b], delivery[b:]
    insert_events(clean.clickhouse, [to_event(e) for e in first])
    assert snapshot_reactions(clean).mode == "full"
    insert_events(clean.clickhouse, [to_event(e) for e in middle])
    if data.draw(st.booleans(), label="incremental run"):
        report = snapshot_reactions(clean)
        assert report.mode == "incremental" and report.changed == len({(e.user_id, e.entity_id) for e in middle})
        pending = last
    else:
        pending = middle + last
    insert_events(clean.clickhouse, [to_event(e) for e in last])

    for user in USERS:
        served, rest = from_snapshot(clean, user, IMAGES)
        assert {e.entity_id for e in pending if e.user_id == user} == set(rest)  # arrivals since: never stale
        assert set(served) | set(rest) == set(IMAGES)
        # A complete set comes from the user's set row unless the user reacted since
        exact, _ = set_from_snapshot(clean.clickhouse, user, 1000)
        assert exact == (not any(e.user_id == user for e in pending))
    _assert_served(clean, history)
    # And a cache miss through the query service serves the same flags
    service = UserReactionQueryService(clean.redis, lambda u, imgs: current_reactions(clean, u, imgs))
    oracle = Oracle(now=datetime.now(UTC), excluded=set())
    oracle.apply_all(history)
    for user in USERS:
        assert service.get_user_reactions(user, IMAGES) == {i: oracle.reactions(user, i) for i in IMAGES}


def _like(user: int, image: int, on: int = 1, at: datetime | None = None) -> E:
    return E(str(uuid.uuid4()), "Image", image, user, 9, "ReactionLike", on, at or NOW - timedelta(hours=1))


def test_an_interrupted_full_run_resumes_and_readers_wait_for_it(
    clean: Runtime, no_margin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full run that runs out of its budget stops after a range of users; readers do not use the snapshot until a
    later run has finished it, from where it stopped."""
    rt = clean
    history = [_like(u, 100 + u) for u in range(1, 7)]
    insert_events(rt.clickhouse, [to_event(e) for e in history])
    monkeypatch.setattr(job, "FULL_CHUNK_ROWS", 2)
    monkeypatch.setattr(changelog, "BUDGET_SHARE", 0.0)  # out of budget after the first range
    assert snapshot_reactions(rt).mode == "full (to be resumed)"
    assert from_snapshot(rt, 1, [101]) == ({}, [101])
    monkeypatch.setattr(changelog, "BUDGET_SHARE", 0.8)
    report = snapshot_reactions(rt)
    assert report.mode == "full" and report.changed == 4  # users 3..6: the first range was users 1 and 2
    for u in range(1, 7):
        served, rest = from_snapshot(rt, u, [100 + u, 200])
        assert rest == [] and [b.on for b in served[100 + u]] == [True, False, False, False]
        assert not any(b.on for b in served[200])


def test_a_snapshot_table_lost_under_a_ready_state_is_not_read_as_no_reactions(clean: Runtime, no_margin: Any) -> None:
    """The table is emptied (a replaced server, a dropped table migrated again) while the job's state still says
    ready: readers go to the latest-state table, not serve zeros for the images without a row."""
    rt = clean
    insert_events(rt.clickhouse, [to_event(_like(1, 100))])
    assert snapshot_reactions(rt).mode == "full"
    assert from_snapshot(rt, 1, [100])[0][100][0].on
    rt.clickhouse.truncate("reactionSnapshot")
    assert from_snapshot(rt, 1, [100]) == ({}, [100])
    assert current_reactions(rt, 1, [100])[100][0].on
    assert snapshot_reactions(rt).mode == "full"  # the job sees it too, and rebuilds
    assert from_snapshot(rt, 1, [100])[0][100][0].on


def test_misses_need_no_redis_and_a_full_run_restarted_under_readers_keeps_them_exact(
    clean: Runtime, no_margin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What readers need is in the table: with Redis unreachable the snapshot still serves. The job's state lost (a
    flushed Redis) starts a full run; until it finishes, readers keep the previous run's position, and an image whose
    reaction arrived since is read from the latest-state table, during and after the run."""
    rt = clean
    insert_events(rt.clickhouse, [to_event(_like(1, 100)), to_event(_like(1, 101))])
    assert snapshot_reactions(rt).mode == "full"
    served, rest = from_snapshot(down_redis(rt), 1, [100, 101, 102])
    assert rest == [] and served[100][0].on and served[101][0].on and not served[102][0].on
    rt.redis.delete(c.JOB_STATE_KEY.format(job=job.REACTIONS_JOB))
    insert_events(rt.clickhouse, [to_event(_like(1, 100, -1, NOW))])  # the like on 100 undone
    monkeypatch.setattr(changelog, "BUDGET_SHARE", 0.0)  # out of budget after the first range
    assert snapshot_reactions(rt).mode == "full (to be resumed)"
    served, rest = from_snapshot(rt, 1, [100, 101])
    assert rest == [100] and served[101][0].on
    assert not current_reactions(rt, 1, [100, 101])[100][0].on and current_reactions(rt, 1, [101])[101][0].on
    monkeypatch.setattr(changelog, "BUDGET_SHARE", 0.8)
    assert snapshot_reactions(rt).mode in ("full", "incremental")
    served, rest = from_snapshot(rt, 1, [100, 101])
    assert rest == [] and not served[100][0].on and served[101][0].on


def test_a_late_event_older_than_the_snapshot_row_changes_nothing(clean: Runtime, no_margin: Any) -> None:
    """A redelivered or late event older than the latest one arrives after the run: the image is read from the
    latest-state table until the next run, which rewrites the same row; the flags never go back."""
    rt = clean
    insert_events(rt.clickhouse, [to_event(_like(1, 100, 1, NOW))])
    snapshot_reactions(rt)
    insert_events(rt.clickhouse, [to_event(_like(1, 100, -1, NOW - timedelta(days=1)))])
    assert from_snapshot(rt, 1, [100]) == ({}, [100])
    assert current_reactions(rt, 1, [100])[100][0].on
    assert snapshot_reactions(rt).changed == 1
    served, rest = from_snapshot(rt, 1, [100])
    assert rest == [] and served[100][0].on


def test_the_job_runs_with_the_snapshot_job(clean: Runtime, no_margin: Any) -> None:
    """``snapshot_user_metrics`` (the beat's task) keeps the reactions snapshot too."""
    insert_events(clean.clickhouse, [to_event(_like(2, 100))])
    assert "; reactions full;" in snapshot_user_metrics(clean).mode
    assert "; reactions incremental;" in snapshot_user_metrics(clean).mode
    assert from_snapshot(clean, 2, [100])[0][100][0].on


def test_a_complete_set_is_one_lookup_of_the_users_set_row_while_it_is_exact(clean: Runtime, no_margin: Any) -> None:
    """The set row serves a user's first miss; a reaction since the run sends it to the latest-state table until the
    next run rewrites the row; a user without reactions is an empty set; the reader's cap decides what is too big."""
    rt = clean
    insert_events(rt.clickhouse, [to_event(_like(1, 100)), to_event(_like(1, 101, -1)), to_event(_like(2, 100))])
    assert snapshot_reactions(rt).mode == "full"
    exact, every = set_from_snapshot(rt.clickhouse, 1, 1000)
    assert exact and every is not None and every.flags == {100: 1, 101: 0}
    assert set_bits(every) == set_bits(all_reactions(rt.clickhouse, 1, 1000))  # the latest-state table's answer
    assert set_from_snapshot(rt.clickhouse, 7, 1000) == (True, ReactionSet({}, ()))  # no reaction at all
    assert set_from_snapshot(rt.clickhouse, 1, 1) == (True, None)  # two images: too many for a cap of one
    # A reaction of user 1 arrives: the set row is not used until the next run, and the answer is the latest state
    insert_events(rt.clickhouse, [to_event(_like(1, 102, 1, NOW))])
    assert set_from_snapshot(rt.clickhouse, 1, 1000) == (False, None)
    assert set_from_snapshot(rt.clickhouse, 2, 1000)[0]  # another user's row still serves
    fresh = complete_reactions(rt, 1, 1000)
    assert fresh is not None and fresh.flags == {100: 1, 101: 0, 102: 1}
    assert snapshot_reactions(rt).mode == "incremental"
    exact, every = set_from_snapshot(rt.clickhouse, 1, 1000)
    assert exact and every is not None and set_bits(every) == set_bits(fresh) and every.flags == fresh.flags


def test_a_user_over_the_jobs_cap_gets_a_count_and_readers_decide_with_their_own(
    clean: Runtime, no_margin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = clean
    monkeypatch.setattr(rt, "settings", rt.settings.model_copy(update={"reactions_complete_max_images": 2}))
    insert_events(rt.clickhouse, [to_event(_like(1, 100 + i)) for i in range(3)])
    assert snapshot_reactions(rt).mode == "full"
    assert set_from_snapshot(rt.clickhouse, 1, 2) == (True, None)  # 3 images: too many for this cap
    assert set_from_snapshot(rt.clickhouse, 1, 5) == (False, None)  # a bigger cap asks the latest-state table
    every = complete_reactions(rt, 1, 5)
    assert every is not None and every.flags == {100: 1, 101: 1, 102: 1}


def test_a_table_kept_without_set_rows_gets_a_full_run_and_is_not_read_for_sets_meanwhile(
    clean: Runtime, no_margin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Complete sets turned on after runs without them (or a table an earlier version kept): readers do not take
    the missing set rows for users without reactions, and the next run is a full one that writes them."""
    rt = clean
    insert_events(rt.clickhouse, [to_event(_like(1, 100))])
    monkeypatch.setattr(rt, "settings", rt.settings.model_copy(update={"reactions_complete_max_images": 0}))
    assert snapshot_reactions(rt).mode == "full"
    assert snapshot_reactions(rt).mode == "incremental"
    assert set_from_snapshot(rt.clickhouse, 1, 1000) == (False, None)
    every = complete_reactions(rt, 1, 1000)
    assert every is not None and every.flags == {100: 1}
    monkeypatch.setattr(rt, "settings", rt.settings.model_copy(update={"reactions_complete_max_images": 1000}))
    assert snapshot_reactions(rt).mode == "full"
    exact, kept = set_from_snapshot(rt.clickhouse, 1, 1000)
    assert exact and kept == every
