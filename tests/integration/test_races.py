"""Interleavings forced with failpoints (``app.core.failpoints``): each test holds one step of one party while
another acts, and checks the rule that must hold whatever the interleaving."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.caches import metrics_cache
from app.client import EventProducer
from app.core import failpoints
from app.core.metrics import SCORE_SCALE
from app.jobs.engagement import recompute_engagement
from app.jobs.reconcile import reconcile_caches
from app.read.metrics_service import UserMetricsQueryService
from app.stores.runtime import Runtime
from app.write import refresher
from tests.stack import REDIS_CLUSTER, SERVER_MODE, wait_events, wait_until

pytestmark = pytest.mark.usefixtures("worker")


def _cached_followers(rt: Runtime, user: int) -> int | None:
    cached = metrics_cache.read(rt.redis, [user])[user]
    return None if cached is None else cached.follower_count


def test_an_event_landing_during_a_cache_fill_reaches_the_cache_within_a_second(
    clean: Runtime, producer: EventProducer
) -> None:
    """A reader fills a missing hash; between its ClickHouse query and its write, a follow is written, flushed
    and acknowledged. The reader's snapshot lacks it; the cache must still show it within a second."""
    rt, user, follower = clean, 910_001, 910_002
    landed: list[float] = []

    def a_follow_lands_now() -> None:
        if not landed:
            producer.record_follow(follower, user)
            wait_events(rt, 1)  # in ClickHouse, the buffer acknowledged, the dirty set worked off
            landed.append(time.monotonic())

    with failpoints.armed(failpoints.METRICS_FILL_BEFORE_WRITE, a_follow_lands_now):
        served = UserMetricsQueryService(rt).get_user_metrics([user])
    assert landed, "the failpoint did not run: no fill happened"
    assert served[user].follower_count == 0  # the reader's snapshot predates the follow: the race happened
    wait_until(lambda: _cached_followers(rt, user) == 1, "the cached hash to count the follow", timeout_s=1.0)
    assert UserMetricsQueryService(rt).get_user_metrics([user])[user].follower_count == 1
    assert reconcile_caches(rt, sample=0).drift_ratio == 0.0  # the safety net finds nothing to repair


@pytest.mark.skipif(REDIS_CLUSTER, reason="replays the standalone mark script as it was before the fix")
def test_the_reconciler_catches_the_stale_fill_when_the_fill_lock_is_not_honoured(
    clean: Runtime, producer: EventProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same interleaving with the flusher's mark as it was before the fix (only users with a hash): the fill's
    stale hash stays, and the reconciler, the safety net, reports drift and repairs it."""
    unaware = refresher._MARK_SCRIPT.replace(f", '{refresher._FILL_LOCK_PREFIX}' .. ARGV[i]", "")
    assert unaware != refresher._MARK_SCRIPT
    monkeypatch.setattr(refresher, "_MARK_SCRIPT", unaware)
    rt, user, follower = clean, 910_011, 910_012

    def a_follow_lands_now() -> None:
        producer.record_follow(follower, user)
        wait_events(rt, 1)

    with failpoints.armed(failpoints.METRICS_FILL_BEFORE_WRITE, a_follow_lands_now):
        UserMetricsQueryService(rt).get_user_metrics([user])
    time.sleep(1.0)  # the rule's second: nothing repairs the hash within it
    assert _cached_followers(rt, user) == 0
    report = reconcile_caches(rt, sample=0)
    assert report.drift_ratio > 0 and report.changed == 1
    assert _cached_followers(rt, user) == 1


def test_a_mark_by_a_process_whose_clock_is_behind_is_not_cleared_unseen(
    clean: Runtime, producer: EventProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresher takes a dirty user, recomputes it, and clears the marks it read. Between its recompute and its
    clear, another worker process (whose clock is 5 s behind) writes a follow and marks the user. The mark must
    survive the clear, or the cache misses the follow until the hash expires."""
    from app.stores.clickhouse import insert_events
    from app.write.owners import resolve
    from bench.oracle import E
    from tests.integration.test_read_properties import to_event

    rt, user = clean, 920_001
    UserMetricsQueryService(rt).get_user_metrics([user])  # a cached hash: the flusher marks the user
    wall = time.time
    held: list[bool] = []

    def another_process_writes_and_marks() -> None:
        if held:
            return
        held.append(True)
        late = to_event(E(str(uuid.uuid4()), "User", user, 920_003, user, "Follow", 1, datetime.now(UTC)))
        insert_events(rt.clickhouse, resolve(rt.clickhouse, [late]).events)
        with monkeypatch.context() as behind:
            behind.setattr(time, "time", lambda: wall() - 5.0)
            refresher.mark_dirty(rt.redis, [user])

    with failpoints.armed(failpoints.REFRESH_BEFORE_CLEAR, another_process_writes_and_marks):
        producer.record_follow(920_002, user)
        wait_until(lambda: held, "the refresher to take the user")
    wait_until(lambda: _cached_followers(rt, user) == 2, "the cached hash to count both follows", timeout_s=1.0)
    assert reconcile_caches(rt, sample=0).drift_ratio == 0.0


def test_an_exclusion_stamped_in_the_past_still_reaches_the_engagement_scores(clean: Runtime) -> None:
    """A writer whose clock is an hour behind excludes a user: its change is stamped below the newest one. The
    engagement job must still see that the excluded set changed (and run in full), or the user keeps counting."""
    from app.stores.clickhouse import insert_events
    from app.write.excluded import set_excluded
    from bench.oracle import E
    from tests.integration.test_read_properties import to_event

    rt = clean
    now = datetime.now(UTC)
    weight = rt.weights.by_type.get("Follow", rt.weights.default)
    insert_events(
        rt.clickhouse, [to_event(E(str(uuid.uuid4()), "User", 7, actor, 7, "Follow", 1, now)) for actor in (2, 3)]
    )
    set_excluded(rt, [50], excluded=True, reason="stamped now")
    assert recompute_engagement(rt).mode == "full"
    assert _score(rt, 7) == 2 * weight
    rt.clickhouse.insert(
        "excludedUsers",
        [(3, 1, "stamped by a clock an hour behind", now - timedelta(hours=1))],
        ["userId", "excluded", "reason", "changedAt"],
    )
    assert recompute_engagement(rt).mode == "full"
    assert _score(rt, 7) == weight


def _score(rt: Runtime, user: int) -> int:
    rows = rt.clickhouse.rows("SELECT score FROM engagementCurrent FINAL WHERE userId = {u:Int64}", {"u": user})
    return int(rows[0][0]) if rows else 0


_SLOW_INSERT_SQL = """
INSERT INTO entityMetricEvents
    (eventId, entityType, entityId, userId, ownerId, metricType, metricValue, createdAt, insertedAt)
SELECT arrayElement({ids:Array(UUID)}, toInt64(number) + 1), 'User', 7, 30 + toInt64(number), 7, 'Follow', 1,
       now64(3, 'UTC'), now64(3, 'UTC')
FROM numbers(2)
WHERE sleepEachRow(1.5) = 0
SETTINGS max_block_size = 1, min_insert_block_size_rows = 1, min_insert_block_size_bytes = 1
"""


@pytest.mark.skipif(not SERVER_MODE, reason="the embedded engine runs one statement at a time: no insert in flight")
def test_rows_of_an_insert_still_landing_during_a_run_are_counted_by_a_later_run(
    clean: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long insert stamps its rows when it starts and lands them block by block (a backfill chunk, a slow
    server). An engagement run in the middle of it must end its changelog slice before the insert's start, or the
    next run's look-back would start after the rows still landing and never count them."""
    from app.derived import changelog
    from app.stores import clickhouse
    from app.stores.clickhouse import insert_events
    from bench.oracle import E
    from tests.integration.test_read_properties import to_event

    monkeypatch.setattr(changelog, "INFLIGHT_MARGIN", timedelta(milliseconds=500))  # shorter than the insert
    rt = clean
    weight = rt.weights.by_type.get("Follow", rt.weights.default)
    insert_events(rt.clickhouse, [to_event(E(str(uuid.uuid4()), "User", 7, 2, 7, "Follow", 1, datetime.now(UTC)))])
    assert recompute_engagement(rt).mode == "full"
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    other = clickhouse.connect(rt.settings)  # the slow insert on a connection of its own
    slow = threading.Thread(target=other.command, args=(_SLOW_INSERT_SQL, {"ids": ids}))
    slow.start()
    try:
        wait_until(
            lambda: rt.clickhouse.rows(
                "SELECT count() FROM entityMetricEvents WHERE eventId = {i:UUID}", {"i": ids[0]}
            )[0][0],
            "the slow insert's first row",
            timeout_s=10,
        )
        assert recompute_engagement(rt).mode == "incremental"  # the second row is still to land
    finally:
        slow.join(30)
        other.close()
    assert recompute_engagement(rt).mode == "incremental"
    assert _score(rt, 7) == 3 * weight


def test_a_clock_that_steps_back_cannot_make_an_older_score_win(
    clean: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The jobs' clock (Redis's) steps back an hour between two engagement runs. The second run's score is the
    newer one and must win in engagementCurrent (and its contributions in engagementContrib), whatever the clock
    says; the incremental run after it must build on them."""
    from app.stores.clickhouse import insert_events
    from bench.oracle import E
    from tests.integration.test_read_properties import to_event

    rt = clean
    weight = rt.weights.by_type.get("Follow", rt.weights.default)
    now = datetime.now(UTC)
    readings = iter([now, now - timedelta(hours=1), now - timedelta(hours=1) + timedelta(seconds=1)])
    monkeypatch.setattr(rt, "clock", lambda: next(readings))
    follow = E(str(uuid.uuid4()), "User", 7, 2, 7, "Follow", 1, now - timedelta(hours=2))
    insert_events(rt.clickhouse, [to_event(follow)])
    assert recompute_engagement(rt, full=True).mode == "full"
    assert _score(rt, 7) == weight
    # The follow is taken back, then another user follows; the clock has stepped back an hour.
    unfollow = E(str(uuid.uuid4()), "User", 7, 2, 7, "Follow", 0, now - timedelta(hours=2) + timedelta(seconds=1))
    insert_events(rt.clickhouse, [to_event(unfollow)])
    assert recompute_engagement(rt, full=True).mode == "full"
    assert _score(rt, 7) == 0
    rt.clickhouse.command("OPTIMIZE TABLE engagementCurrent FINAL")  # a merge keeps the newest version only
    assert _score(rt, 7) == 0
    other = E(str(uuid.uuid4()), "User", 7, 3, 7, "Follow", 1, now - timedelta(hours=2))
    insert_events(rt.clickhouse, [to_event(other)])
    assert recompute_engagement(rt, full=False).mode == "incremental"
    assert _score(rt, 7) == weight
    stamps = [r[0] for r in rt.clickhouse.rows("SELECT stamp FROM engagementRuns ORDER BY stamp")]
    assert len(stamps) == 3 and stamps == sorted(set(stamps))


def test_rows_landing_in_the_middle_of_an_incremental_run_are_counted_once(clean: Runtime) -> None:
    """An incremental run has collected its changed keys; before it reads their rows, an unfollow of one of those
    keys and a download of the same owner land. Whether this run or the next counts them, after the next run the
    score is the oracle's: nothing half-seen, nothing counted twice."""
    from app.stores.clickhouse import insert_events
    from bench.oracle import E, Oracle
    from tests.integration.test_read_properties import to_event

    rt, owner = clean, 7
    now = datetime.now(UTC)
    sent = [E(str(uuid.uuid4()), "User", owner, 2, owner, "Follow", 1, now - timedelta(hours=3))]
    insert_events(rt.clickhouse, [to_event(e) for e in sent])
    assert recompute_engagement(rt, full=True).mode == "full"
    arriving = [
        E(str(uuid.uuid4()), "User", owner, 3, owner, "Follow", 1, now - timedelta(hours=2)),
        E(str(uuid.uuid4()), "Model", 700, 4, owner, "Download", 1, now - timedelta(hours=2)),
    ]
    mid_run = [
        E(str(uuid.uuid4()), "User", owner, 3, owner, "Follow", -1, now - timedelta(hours=1)),  # a changed key
        E(str(uuid.uuid4()), "Model", 700, 5, owner, "Download", 2, now - timedelta(hours=1)),
    ]
    insert_events(rt.clickhouse, [to_event(e) for e in arriving])
    landed: list[bool] = []

    def rows_land_now() -> None:
        if not landed:
            landed.append(True)
            insert_events(rt.clickhouse, [to_event(e) for e in mid_run])

    with failpoints.armed(failpoints.ENGAGEMENT_MID_RUN, rows_land_now):
        assert recompute_engagement(rt, full=False).mode == "incremental"
    assert landed
    assert recompute_engagement(rt, full=False).mode == "incremental"
    oracle = Oracle(now=datetime.now(UTC))
    oracle.apply_all(sent + arriving + mid_run)
    expected = int(Decimal(str(oracle.metrics(owner)["engagementScore"])) * SCORE_SCALE)
    assert _score(rt, owner) == expected
    assert recompute_engagement(rt, full=True).mode == "full"  # and a full run agrees
    assert _score(rt, owner) == expected


def test_an_engagement_run_that_lost_its_lock_writes_nothing(clean: Runtime) -> None:
    """The job's lock goes while an incremental run works (expired, or lost with Redis's data): another run may be
    working beside it, and two runs adding the same deltas would double them. The run stops before writing
    (``LockLost``, a transient failure: the next tick runs again); the next run counts every event once."""
    from app.core import constants as c
    from app.jobs.registry import run_now
    from app.jobs.run import job_lock_key
    from app.stores.clickhouse import insert_events
    from app.stores.locks import LockLost
    from bench.oracle import E, Oracle
    from tests.integration.test_read_properties import to_event

    rt, owner = clean, 7
    now = datetime.now(UTC)
    first = [E(str(uuid.uuid4()), "User", owner, 2, owner, "Follow", 1, now - timedelta(hours=3))]
    insert_events(rt.clickhouse, [to_event(e) for e in first])
    assert run_now(rt, c.RECOMPUTE_ENGAGEMENT)["mode"] == "full"
    before = _score(rt, owner)
    later = [E(str(uuid.uuid4()), "Model", 700, 4, owner, "Download", 1, now - timedelta(hours=2))]
    insert_events(rt.clickhouse, [to_event(e) for e in later])

    def lock_lost() -> None:
        rt.redis.delete(job_lock_key(c.RECOMPUTE_ENGAGEMENT))

    with failpoints.armed(failpoints.ENGAGEMENT_MID_RUN, lock_lost), pytest.raises(LockLost):
        run_now(rt, c.RECOMPUTE_ENGAGEMENT)
    assert _score(rt, owner) == before  # nothing written

    run_now(rt, c.RECOMPUTE_ENGAGEMENT)
    oracle = Oracle(now=datetime.now(UTC))
    oracle.apply_all(first + later)
    assert _score(rt, owner) == int(Decimal(str(oracle.metrics(owner)["engagementScore"])) * SCORE_SCALE)
