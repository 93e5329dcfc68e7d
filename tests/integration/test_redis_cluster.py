"""Redis Cluster mode against a real local cluster (three masters, three replicas): every cache script over users of
many slots, the read path end to end, the rank swap, and a master killed right after buffer appends.

The cluster runs on the machine's ``redis-server`` (skipped where it or ``redis-cli`` is missing). The mode is the
process's (``app.core.keys``): it is switched back to the session's when the module ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis

from app.caches import metrics_cache, reactions_cache
from app.caches.metrics_cache import set_field_if_cached
from app.caches.reactions_cache import BitUpdate
from app.core import keys
from app.core.events import Event, MetricType
from app.core.metrics import UserMetrics
from app.core.settings import Settings
from app.jobs.ranks import recompute_ranks
from app.local import redis_cluster
from app.read.metrics_service import UserMetricsQueryService
from app.stores.clickhouse import insert_events
from app.stores.runtime import Runtime
from app.write import buffer, refresher
from tests.stack import wipe_clickhouse

pytestmark = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-cli")), reason="needs redis-server and redis-cli"
)

USERS = list(range(1, 301))  # spread over many slots and all three masters


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings whose data dir holds the running cluster (its URL is ``redis_cluster.running_url``)."""
    settings = Settings(DATA_DIR=str(tmp_path_factory.mktemp("cluster")))
    mode = keys.in_cluster()  # the session's own cache may be a cluster too
    redis_cluster.start(settings)
    try:
        yield settings
    finally:
        redis_cluster.stop(settings)
        keys.use_cluster(mode)


@pytest.fixture()
def crt(cluster: Settings, rt: Runtime) -> Iterator[Runtime]:
    """A runtime on the test ClickHouse whose cache is the cluster, emptied first."""
    url = redis_cluster.running_url(cluster)
    cluster_rt = Runtime(rt.settings.model_copy(update={"redis_url": url}), clickhouse=rt.clickhouse)
    cluster_rt.redis.flushdb()
    wipe_clickhouse(cluster_rt)
    try:
        yield cluster_rt
    finally:
        keys.use_cluster(True)  # the module's mode until its end


def test_a_users_keys_share_a_slot_and_the_names_carry_the_tag(crt: Runtime) -> None:
    names = [
        metrics_cache.metrics_key(42),
        metrics_cache.version_key(42),
        metrics_cache.stale_key(42),
        metrics_cache.fill_lock_key(42),
        reactions_cache.flags_key(42),
        reactions_cache.versions_key(42),
    ]
    assert names[0] == "user:metrics:{42}" and names[4] == "reactions:{42}"
    slots = {int(crt.redis.cluster_keyslot(name)) for name in names}  # type: ignore[attr-defined]
    assert slots == {keys.user_slot(42)}
    board = {int(crt.redis.cluster_keyslot(k)) for k in (keys.leaderboard(), keys.leaderboard_ranks())}  # type: ignore[attr-defined]
    assert len(board) == 1


def test_metrics_hashes_write_read_and_never_go_back_in_time(crt: Runtime) -> None:
    r = crt.redis
    assert len({keys.user_slot(u) for u in USERS}) > 250
    assert metrics_cache.write(r, 2_000, {u: UserMetrics(follower_count=u) for u in USERS}) == len(USERS)
    # An older snapshot lands nowhere; a newer one everywhere
    assert metrics_cache.write(r, 1_000, {u: UserMetrics(follower_count=0) for u in USERS}) == 0
    assert metrics_cache.write(r, 3_000, {u: UserMetrics(follower_count=u + 1) for u in USERS[:100]}) == 100
    got = metrics_cache.read_noting(r, [*USERS, 999], time.time())
    assert got[999] is None
    assert all(got[u].follower_count == u + (1 if u <= 100 else 0) for u in USERS)  # type: ignore[union-attr]
    assert 0 < r.ttl(metrics_cache.metrics_key(7)) <= 3600 and 0 < r.ttl(metrics_cache.version_key(7)) <= 3600
    assert r.zcard("metrics:recent-reads") == len(USERS) + 1
    assert int(r.hget("stats:counters", "cache_hits_total") or 0) == len(USERS)
    # Fields set only where a hash is cached
    assert set_field_if_cached(r, "rank", {1: "5", 2: "", 999: "1"}) == 2
    assert r.hget(metrics_cache.metrics_key(1), "rank") == "5" and not r.exists(metrics_cache.metrics_key(999))
    # A field from an older snapshot than the hash's is not set; from a newer one it is
    assert set_field_if_cached(r, "engagementScore", {1: "9", 200: "9"}, snapshot_version=2_500) == 1
    assert r.hget(metrics_cache.metrics_key(1), "engagementScore") != "9"  # written at 3,000
    assert r.hget(metrics_cache.metrics_key(200), "engagementScore") == "9"  # written at 2,000


def test_fill_locks_and_dirty_marks_across_slots(crt: Runtime) -> None:
    r = crt.redis
    held = metrics_cache.take_fill_locks(r, USERS, "a", 10_000)
    assert held == USERS and metrics_cache.take_fill_locks(r, USERS, "b", 10_000) == []
    metrics_cache.write(r, 1, {u: UserMetrics() for u in USERS[:10]})
    metrics_cache.release_fill_locks(r, USERS[5:], "a")
    # Marked: users with a hash (1..10) or a fill still held (1..5); not the others
    assert refresher.mark_dirty(r, [*USERS[:20], 5000]) == 10
    assert {int(m) for m in r.zrange("metrics:dirty", 0, -1)} == set(USERS[:10])
    assert 0 < r.ttl("metrics:dirty")


def test_reaction_bits_merge_by_version_across_users(crt: Runtime) -> None:
    r = crt.redis
    newer = {u: [BitUpdate(100, b, b == 1, "000000000000200:b") for b in (1, 2, 4, 8)] for u in USERS[:50]}
    older = {u: [BitUpdate(100, 2, True, "000000000000100:a")] for u in USERS[:50]}
    assert reactions_cache.merge(r, newer) == 50
    assert reactions_cache.merge(r, older) == 0
    assert all(reactions_cache.read(r, u, [100, 101]) == {100: 1, 101: None} for u in USERS[:50])
    assert 0 < r.ttl(reactions_cache.flags_key(3)) <= 604_800


def test_the_read_path_and_the_rank_swap_on_the_cluster(crt: Runtime) -> None:
    now = datetime.now(UTC)
    events = [Event(_event_id(i), "User", 2 + i % 3, 10 + i, 2 + i % 3, MetricType.FOLLOW, 1, now) for i in range(9)]
    insert_events(crt.clickhouse, events)
    service = UserMetricsQueryService(crt)
    first = service.get_user_metrics([2, 3, 4, 5])
    assert [first[u].follower_count for u in (2, 3, 4, 5)] == [3, 3, 3, 0]
    assert crt.redis.hget(metrics_cache.metrics_key(2), "followerCount") == "3"
    from app.jobs.engagement import recompute_engagement

    recompute_engagement(crt, full=True)
    report = recompute_ranks(crt)
    assert report.users == 3
    board = crt.redis.zrange(keys.leaderboard(), 0, -1, withscores=True)
    assert {m for m, _ in board} == {"2", "3", "4"} and crt.redis.hget(keys.leaderboard_ranks(), "4") == "3"
    assert service.get_user_rank(2) == 1  # equal scores: the lower id ranks first
    crt.redis.delete(metrics_cache.metrics_key(2))
    assert service.get_user_metrics([2])[2].engagement_score == Decimal("0.3")


def _event_id(i: int) -> uuid.UUID:
    return uuid.UUID(int=(0x7 << 76) | (0b10 << 62) | (i + 1))


def test_buffer_appends_survive_their_master_being_killed(crt: Runtime, cluster: Settings) -> None:
    r = crt.redis
    buffer.ensure_group(r)
    appended = [
        buffer.append(
            r, "record_follow", [Event(_event_id(i), "User", 1, 2, 1, MetricType.FOLLOW, 1, datetime.now(UTC))]
        )
        for i in range(50)
    ]
    # Given the stream's master killed outright right after the appends (no time to replicate anything more)
    node: Any = r.get_node_from_key("events:buffer")  # type: ignore[attr-defined]
    pids = redis_cluster.node_pids(cluster)
    os.kill(pids[int(node.port)], signal.SIGKILL)
    # When a replica takes over
    deadline = time.monotonic() + 30
    while True:
        try:
            r.nodes_manager.initialize()  # type: ignore[attr-defined]
            if r.get_node_from_key("events:buffer").port != node.port:  # type: ignore[attr-defined]
                break
        except Exception:  # noqa: BLE001 - the cluster is failing over; keep asking
            pass
        assert time.monotonic() < deadline, "no replica took over"
        time.sleep(0.2)
    # Then every acknowledged append is there
    ids = {entry_id for entry_id, _ in r.xrange("events:buffer")}
    assert set(appended) <= ids
    # And while the new master has no replica an append is refused (its message would be retried), not acknowledged
    one = [Event(_event_id(99), "User", 1, 2, 1, MetricType.FOLLOW, 1, datetime.now(UTC))]
    with pytest.raises(redis.ConnectionError, match="no replica"):
        buffer.append(r, "record_follow", one)
    # And once the killed node is back (as the new master's replica) appends are acknowledged again
    redis_cluster.restart_node(cluster, int(node.port))
    deadline = time.monotonic() + 30
    while True:
        try:
            buffer.append(r, "record_follow", one)
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the restarted node did not rejoin as a replica"
            time.sleep(0.2)
