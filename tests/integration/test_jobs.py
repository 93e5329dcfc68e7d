"""Beat jobs against real Redis, the real ClickHouse engine, a real worker and real ``celery beat`` processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from app.caches import metrics_cache
from app.caches.metrics_cache import metrics_key
from app.caches.reactions_cache import flags_key
from app.core import constants as c
from app.core import keys
from app.core.metrics import SCORE_SCALE, UserMetrics
from app.core.paths import REPO
from app.derived.changelog import run_on_changelog
from app.jobs.engagement import Engagement, mark_phase, recompute_engagement
from app.jobs.ranks import recompute_ranks
from app.jobs.reconcile import reconcile_caches
from app.jobs.rewarm import refresh_expiring_caches
from app.ops.exporter import StatsCollector
from app.read.metrics_service import UserMetricsQueryService
from app.stores.clickhouse import insert_events
from app.stores.redis_store import server_time_us
from app.stores.runtime import Runtime
from bench.oracle import Oracle
from tests.integration.test_read_properties import USERS, an_event, to_event
from tests.properties import examples
from tests.stack import BROKER_URL, CACHE_REDIS_URL, process_env, purge_broker, wait_drained, wipe_clickhouse


def current_scores(rt: Runtime) -> dict[int, int]:
    return {int(u): int(s) for u, s in rt.clickhouse.rows("SELECT userId, score FROM engagementCurrent FINAL")}


@pytest.mark.timeout(900)  # 20 examples, each wiping and refilling every table: minutes on a 2x2 cluster
@settings(max_examples=examples(20), deadline=None, suppress_health_check=list(HealthCheck))
@given(history=st.lists(an_event(), min_size=1, max_size=30, unique_by=lambda e: e.event_id), data=st.data())
def test_engagement_full_and_incremental_match_the_oracle(clean, history, data):  # type: ignore[no-untyped-def]
    clean.redis.flushdb()
    wipe_clickhouse(clean)
    cut = data.draw(st.integers(0, len(history)))
    cut2 = data.draw(st.integers(cut, len(history)))
    first, steps = history[:cut], [history[cut:cut2], history[cut2:]]
    insert_events(clean.clickhouse, [to_event(e) for e in first + first[:2]])  # with redeliveries
    UserMetricsQueryService(clean).get_user_metrics(USERS)  # cached hashes get the new scores
    report = recompute_engagement(clean)
    assert report.mode == "full"
    seen = list(first)
    for step in [*steps, None]:
        oracle = Oracle(now=datetime.now(UTC))
        oracle.apply_all(seen)
        got = current_scores(clean)
        for uid in USERS:
            expected = int(Decimal(oracle.metrics(uid).get("engagementScore", 0)) * SCORE_SCALE)  # type: ignore[arg-type]
            assert got.get(uid, 0) == expected, (uid, got, seen)
            cached = metrics_cache.read(clean.redis, [uid])[uid]
            assert cached is not None and cached.engagement_score * SCORE_SCALE == expected
        if step is not None:
            # New events, and redeliveries of earlier ones (any order), then an incremental run.
            again = data.draw(st.lists(st.sampled_from(seen), max_size=3)) if seen else []
            insert_events(clean.clickhouse, [to_event(e) for e in step + again])
            seen += step
            assert recompute_engagement(clean).mode == "incremental"


def test_a_run_rereading_the_last_runs_arrivals_moves_no_score(clean: Runtime) -> None:
    """Each incremental run re-reads the last 10 s of the changelog (inserts in flight). A key already counted is
    read back from the stored contributions and nets to zero. Found in cluster mode: an IN in PREWHERE over the
    node-local scratch table was not made global by the 24.3+ analyzer, the stored row was never read, and the like
    counted twice."""
    from bench.oracle import E

    now = datetime.now(UTC) - timedelta(minutes=1)
    assert recompute_engagement(clean).mode == "full"
    insert_events(clean.clickhouse, [to_event(E(str(uuid.uuid4()), "Image", 102, 1, 4, "ReactionLike", 1, now))])
    assert recompute_engagement(clean).mode == "incremental"
    liked = {u: s for u, s in current_scores(clean).items() if s}
    assert list(liked) == [4] and liked[4] > 0
    insert_events(clean.clickhouse, [to_event(E(str(uuid.uuid4()), "User", 2, 1, 2, "Follow", -1, now))])
    assert recompute_engagement(clean).mode == "incremental"  # its slice holds the like again
    assert {u: s for u, s in current_scores(clean).items() if s} == liked


def test_an_incremental_run_moves_every_owners_stored_score(clean: Runtime) -> None:
    """Follows of eight owners (their scores spread over every shard), then unfollows: each incremental run moves
    each owner's stored score by the difference. Found in cluster mode: the previous scores were read with an IN over
    the run's node-local scratch tables inside a joined subquery; the other shards read their own empty ones, and
    their owners' scores became the difference alone (-0.1 after the unfollow)."""
    from bench.oracle import E

    now = datetime.now(UTC) - timedelta(minutes=1)
    owners = list(range(1, 9))
    assert recompute_engagement(clean).mode == "full"
    for value, expected, at in ((1, Decimal("0.1"), now), (-1, Decimal(0), now + timedelta(seconds=1))):
        follows = [E(str(uuid.uuid4()), "User", o, 20, o, "Follow", value, at) for o in owners]
        insert_events(clean.clickhouse, [to_event(e) for e in follows])
        assert recompute_engagement(clean).mode == "incremental"
        scores = current_scores(clean)
        assert {o: scores.get(o, 0) for o in owners} == {o: int(expected * SCORE_SCALE) for o in owners}


def test_an_engagement_run_leaves_a_hash_from_a_newer_snapshot_alone(clean: Runtime) -> None:
    """A run's scores are as of its snapshot (Redis time before its queries); a hash the refresher wrote from a later
    snapshot keeps its score, which a run would otherwise take back in time until the next run."""
    from bench.oracle import E

    now = datetime.now(UTC)
    insert_events(clean.clickhouse, [to_event(E(str(uuid.uuid4()), "Model", 11, 2, 1, "Download", 3, now))])
    job = Engagement(clean)  # this run's snapshot
    newer = UserMetrics(follower_count=7, engagement_score=Decimal(5))
    assert metrics_cache.write(clean.redis, server_time_us(clean.redis), {1: newer}) == 1
    assert run_on_changelog(clean, job, True).changed == 1  # user 1 scores 3 in ClickHouse...
    assert current_scores(clean)[1] == 3 * SCORE_SCALE
    cached = metrics_cache.read(clean.redis, [1])[1]
    assert cached is not None and cached.engagement_score == Decimal(5)  # ...and the newer hash keeps its own
    # A run over a hash from an older snapshot sets the score
    clean.redis.delete(metrics_cache.version_key(1))
    clean.clickhouse.truncate("engagementCurrent")
    job = Engagement(clean)
    assert metrics_cache.write(clean.redis, job.cache_version - 1, {1: newer}) == 1
    run_on_changelog(clean, job, True)
    cached = metrics_cache.read(clean.redis, [1])[1]
    assert cached is not None and cached.engagement_score == Decimal(3)


def test_engagement_trend_is_recorded_and_unchanged_scores_are_not(clean: Runtime) -> None:
    from bench.oracle import E

    now = datetime.now(UTC)
    insert_events(clean.clickhouse, [to_event(E(str(uuid.uuid4()), "Image", 1, 2, 1, "Download", 3, now))])
    recompute_engagement(clean)
    recompute_engagement(clean)  # nothing changed: nothing recorded
    rows = clean.clickhouse.rows("SELECT userId, score FROM engagementTrend ORDER BY computedAt")
    assert rows == [(1, 3 * SCORE_SCALE)]
    points = UserMetricsQueryService(clean).get_user_metric_history(1, "engagementScore", now - timedelta(days=1))
    assert points[-1].value == Decimal(3)


def test_incremental_engagement_drops_keys_leaving_the_window_and_an_interrupted_run_is_repaired(
    clean: Runtime,
) -> None:
    from bench.oracle import E

    def follow(actor: int, at: datetime) -> Any:
        return to_event(E(str(uuid.uuid4()), "User", 7, actor, 7, "Follow", 1, at))

    weight = clean.weights.by_type.get("Follow", clean.weights.default)
    now = datetime.now(UTC)
    # One follow leaves the 30-day window three seconds from now, the other stays.
    insert_events(clean.clickhouse, [follow(2, now - clean.window + timedelta(seconds=3)), follow(3, now)])
    assert recompute_engagement(clean).mode == "full"
    assert current_scores(clean)[7] == 2 * weight
    time.sleep(3.5)
    assert recompute_engagement(clean).mode == "incremental"
    assert current_scores(clean)[7] == weight
    # A run that died between its two writes leaves contributions and scores apart: the next run is full.
    mark_phase(clean, "writing")
    insert_events(clean.clickhouse, [follow(4, datetime.now(UTC))])
    assert recompute_engagement(clean, full=False).mode == "full"
    assert current_scores(clean)[7] == 2 * weight
    insert_events(clean.clickhouse, [follow(5, datetime.now(UTC))])
    assert recompute_engagement(clean).mode == "incremental"
    assert current_scores(clean)[7] == 3 * weight


def test_ranks_follow_the_definition_with_ties_and_zeros(clean: Runtime) -> None:
    scores = {1: 5, 2: 5, 3: 0, 4: 7, 10: 5}
    clean.clickhouse.insert(
        "engagementCurrent",
        [(u, s * SCORE_SCALE, datetime.now(UTC)) for u, s in scores.items()],
        ["userId", "score", "computedAt"],
    )
    service = UserMetricsQueryService(clean)
    service.get_user_metrics([1, 3, 4])  # cached hashes
    clean.redis.hset(metrics_key(3), "rank", "9")  # a stale rank: the user's score is now 0
    report = recompute_ranks(clean)
    assert report.users == 4
    expected = {4: 1, 1: 2, 2: 3, 10: 4, 3: None}
    assert {u: service.get_user_rank(u) for u in expected} == expected
    assert clean.redis.hget(metrics_key(1), "rank") == "2" and clean.redis.hget(metrics_key(4), "rank") == "1"
    assert clean.redis.hget(metrics_key(3), "rank") is None and not clean.redis.exists(metrics_key(2))
    assert 0 < clean.redis.ttl(keys.leaderboard()) <= c.LEADERBOARD_TTL_S


def test_rank_swap_is_atomic_under_concurrent_readers(clean: Runtime) -> None:
    sizes = (12_000, 17_000)
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(int(clean.redis.zcard(keys.leaderboard())))

    def load(n: int) -> None:
        clean.clickhouse.truncate("engagementCurrent")
        rows = [(u, 1 + u % 97, datetime.now(UTC)) for u in range(1, n + 1)]
        clean.clickhouse.insert("engagementCurrent", rows, ["userId", "score", "computedAt"])

    load(sizes[0])
    recompute_ranks(clean)
    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(4):
            load(sizes[(i + 1) % 2])
            recompute_ranks(clean)
    finally:
        stop.set()
        reader.join()
    assert seen == set(sizes)  # never an empty or half-built board


def test_reconcile_repairs_corruption_and_a_flushed_redis(clean: Runtime) -> None:
    from tests.integration.test_read_service import follow

    insert_events(clean.clickhouse, [follow(1, 2), follow(3, 2), follow(2, 1)])
    service = UserMetricsQueryService(clean)
    service.get_user_metrics([1, 2])
    clean.redis.hset(metrics_key(2), "followerCount", "999")  # a lost or doubled increment
    report = reconcile_caches(clean, sample=10)
    assert report.changed == 1 and report.users == 2 and report.drift_ratio == 0.5
    assert clean.redis.hget(metrics_key(2), "followerCount") == "2"
    assert float(clean.redis.hget(c.COUNTER_KEY, "reconcile_drift_ratio") or 0) == 0.5
    # After FLUSHALL: one cycle of the jobs and reads give correct values and a board again
    clean.redis.flushdb()
    recompute_engagement(clean)
    recompute_ranks(clean)
    reconcile_caches(clean)
    assert service.get_user_metrics([2])[2].follower_count == 2
    assert clean.redis.zcard(keys.leaderboard()) == 2


def test_reconcile_counts_no_drift_for_hashes_the_write_path_is_still_updating(clean: Runtime) -> None:
    from app.derived.metrics_from_log import compute_user_metrics
    from tests.integration.test_read_service import follow

    insert_events(clean.clickhouse, [follow(1, 2)])
    UserMetricsQueryService(clean).get_user_metrics([2, 3])
    # Given events in ClickHouse that the cached hashes do not show yet: user 2 is marked for the refresher, and
    # user 3's event is between its insert and the flusher's mark, with the refresher's write half a second away
    insert_events(clean.clickhouse, [follow(4, 2), follow(5, 3)])
    clean.redis.zadd(c.METRICS_DIRTY_KEY, {"2": server_time_us(clean.redis)})

    def refresher() -> None:
        time.sleep(0.5)
        version = server_time_us(clean.redis)
        fresh = compute_user_metrics(clean.clickhouse, [3], weights=clean.weights, window=clean.window)
        metrics_cache.write(clean.redis, version, fresh)

    writer = threading.Thread(target=refresher)
    writer.start()
    # When the reconciler compares them meanwhile
    report = reconcile_caches(clean, sample=10)
    writer.join()
    # Then neither is drift: nothing counted, nothing written by the reconciler
    assert report.users == 2 and report.changed == 0 and report.drift_ratio == 0.0
    assert float(clean.redis.hget(c.COUNTER_KEY, "reconcile_drift_ratio") or 0) == 0.0


def test_refresh_rewarms_hot_users_before_expiry_and_leaves_cold_ones(clean: Runtime) -> None:
    from tests.integration.test_read_service import follow

    insert_events(clean.clickhouse, [follow(1, 2), follow(3, 5)])
    UserMetricsQueryService(clean).get_user_metrics([2])  # read recently: hot
    metrics_cache.write(clean.redis, 1, {5: UserMetrics(follower_count=1)})  # cached but never read: cold
    clean.redis.hset(flags_key(2), "100", "0")
    clean.redis.expire(flags_key(2), 10)
    for key in (metrics_key(2), metrics_key(5)):
        clean.redis.pexpire(key, 2000)
    report = refresh_expiring_caches(clean)
    assert report.users == 1
    assert clean.redis.ttl(metrics_key(2)) > 3500 and clean.redis.ttl(flags_key(2)) > 600_000
    assert clean.redis.pttl(metrics_key(5)) <= 2000


def test_exporter_serves_counters_prometheus_can_scrape(clean: Runtime) -> None:
    service = UserMetricsQueryService(clean)
    service.get_user_metrics([1, 2])
    service.get_user_metrics([1, 2])
    registry = CollectorRegistry()
    registry.register(StatsCollector(clean))
    text = generate_latest(registry).decode()
    assert "usermetrics_cache_hits_total 2.0" in text and "usermetrics_cache_misses_total 2.0" in text
    assert "usermetrics_cache_hit_ratio 0.5" in text and "usermetrics_dead_letters 0.0" in text


def _beat(tmp: Path, name: str, interval: str) -> subprocess.Popen[bytes]:
    env = process_env(f"beat-{name}")
    env.update(
        REDIS_URL=CACHE_REDIS_URL,
        CELERY_BROKER_URL=BROKER_URL,
        ENGAGEMENT_INTERVAL_S=interval,
        RANKS_INTERVAL_S=interval,
        REFRESH_INTERVAL_S=interval,
        RECONCILE_INTERVAL_S=interval,
        SNAPSHOT_INTERVAL_S=interval,
        PEERS_INTERVAL_S=interval,
        ACHIEVEMENTS_INTERVAL_S=interval,
        BUFFER_CHECK_INTERVAL_S=interval,
        DATA_DIR=str(tmp / name),
    )
    argv = [sys.executable, "-m", "celery", "-A", "tasks.celery_app:celery_app", "beat"]
    argv += ["-s", str(tmp / f"{name}-schedule"), "--pidfile=", "--loglevel", "WARNING"]
    return subprocess.Popen(argv, env=env, cwd=REPO, start_new_session=True)  # noqa: S603


def _runs(rt: Runtime) -> dict[str, int]:
    stats: Any = rt.redis.hgetall(c.COUNTER_KEY)
    return {job: int(stats.get(f"job_{job}_runs_total", 0)) for job in c.JOBS if job != c.CHECK_EVENT_BUFFER}


@pytest.mark.usefixtures("worker")
def test_two_real_beats_drive_every_job_once_per_interval(clean: Runtime, tmp_path: Path) -> None:
    wait_drained(clean)
    beats = [_beat(tmp_path, f"beat{i}", "2") for i in range(2)]
    started = time.monotonic()
    try:
        deadline = started + 40
        while time.monotonic() < deadline and (min(_runs(clean).values()) < 1 or time.monotonic() - started < 8):
            time.sleep(0.2)
    finally:
        for b in beats:
            b.terminate()
        for b in beats:
            b.wait(timeout=10)
    elapsed = time.monotonic() - started
    # The ticks the beats published and the worker has not taken yet would otherwise run during the next tests
    # (a reconcile rewriting their hashes, a snapshot writing its cut): dropped, and the jobs running finish.
    purge_broker()
    wait_drained(clean, 120)
    runs = _runs(clean)
    assert min(runs.values()) >= 1, runs  # every job ran, driven by beat
    # Two beats publish every tick twice; a job runs at most once per 2-second tick.
    assert max(runs.values()) <= elapsed / 2 + 2, (runs, elapsed)
    assert int(clean.redis.hget(c.COUNTER_KEY, f"job_{c.RECOMPUTE_RANKS}_skipped_total") or 0) >= 1


def test_a_freshly_filled_hash_carries_the_rank_from_the_board(clean: Runtime) -> None:
    clean.redis.zadd(keys.leaderboard(), {"7": 3.0, "8": 3.0, "9": 1.0})
    got = UserMetricsQueryService(clean).get_user_metrics([8, 9, 10])
    assert (got[8].rank, got[9].rank, got[10].rank) == (2, 3, None)
    assert clean.redis.hget(metrics_key(8), "rank") == "2" and clean.redis.hget(metrics_key(10), "rank") is None
