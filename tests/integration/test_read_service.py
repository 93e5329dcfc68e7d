"""The query services' cache contract and failure behaviour, against real Redis and the real ClickHouse engine.

ClickHouse "down" is a real client pointed at a closed port; Redis "down" likewise. Nothing is mocked: a source
that counts its calls wraps the real one where a test needs to know how often ClickHouse was asked.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.caches.metrics_cache import metrics_key
from app.caches.reactions_cache import BitUpdate, flags_key, versions_key
from app.core import constants as c
from app.core import keys
from app.core.events import Event, MetricType
from app.core.metrics import UserMetrics
from app.read.metrics_service import UserMetricsQueryService
from app.read.reactions_service import FILLS, CacheFills, UserReactionQueryService, latest_reactions
from app.read.sources import metrics_source
from app.stores.clickhouse import insert_events
from app.stores.redis_store import is_cluster
from app.stores.runtime import Runtime

NOW = datetime.now(UTC)


def follow(follower: int, user: int, on: bool = True, at: datetime | None = None) -> Event:
    return Event(uuid.uuid4(), "User", user, follower, user, MetricType.FOLLOW, 1 if on else -1, at or NOW)


def reaction(user: int, image: int, metric: MetricType, on: bool = True) -> Event:
    return Event(uuid.uuid4(), "Image", image, user, 9, metric, 1 if on else -1, NOW)


class Counting:
    """The real metrics source, counting how many times (and for whom) it is asked."""

    def __init__(self, rt: Runtime) -> None:
        self.inner = metrics_source(rt)
        self.calls: list[list[int]] = []
        self._lock = threading.Lock()

    def __call__(self, user_ids: Sequence[int], as_of: datetime | None = None) -> dict[int, UserMetrics]:
        with self._lock:
            self.calls.append(sorted(user_ids))
        time.sleep(0.05)  # a slow query: concurrent readers really overlap
        return self.inner(user_ids, as_of)


def down_clickhouse(rt: Runtime) -> Runtime:
    return Runtime(
        rt.settings.model_copy(update={"clickhouse_url": "http://127.0.0.1:9/db", "clickhouse_timeout_s": 1})
    )


def down_redis(rt: Runtime) -> Runtime:
    settings = rt.settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0", "redis_timeout_s": 0.5})
    return Runtime(settings, clickhouse=rt.clickhouse)


def test_miss_fill_hit_expiry_and_unknown_users(clean: Runtime) -> None:
    insert_events(clean.clickhouse, [follow(1, 2), follow(3, 2), follow(2, 1)])
    source = Counting(clean)
    service = UserMetricsQueryService(clean, source)
    # A miss asks ClickHouse once for all missing users (duplicates and unknown users included) and fills the cache
    first = service.get_user_metrics([2, 1, 2, 404])
    assert list(first) == [2, 1, 404] and source.calls == [[1, 2, 404]]
    assert first[2].follower_count == 2 and first[1].follower_count == 1 and first[404] == UserMetrics()
    assert 3500 < clean.redis.ttl(metrics_key(2)) <= c.USER_METRICS_TTL_S
    assert clean.redis.hgetall(metrics_key(2))["followerCount"] == "2"
    # A hit does not ask ClickHouse
    assert service.get_user_metrics([1, 2, 404]) == first and len(source.calls) == 1
    # After expiry the next read is a miss again, for that user only
    clean.redis.pexpire(metrics_key(1), 1)
    time.sleep(0.05)
    assert service.get_user_metrics([1, 2])[1].follower_count == 1
    assert source.calls[1:] == [[1]]
    assert service.get_user_follower_count(2) == 2
    assert service.calculate_engagement_score(2) == first[2].engagement_score


def test_concurrent_misses_cause_one_clickhouse_query(clean: Runtime) -> None:
    insert_events(clean.clickhouse, [follow(1, 2), follow(3, 2)])
    source = Counting(clean)
    barrier = threading.Barrier(16)
    results: list[Any] = []

    def read() -> None:
        service = UserMetricsQueryService(clean, source)
        barrier.wait()
        results.append(service.get_user_metrics([2, 3]))

    threads = [threading.Thread(target=read) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16 and all(r[2].follower_count == 2 for r in results)
    # Each user is computed once, whatever the number of readers: one query for both on one Redis. On a Redis
    # Cluster the two users' fill locks live in two slots and are taken in two calls, so two readers may each win
    # one: two queries of one user each, never a user computed twice.
    assert sorted(u for call in source.calls for u in call) == [2, 3]
    if not is_cluster(clean.redis):
        assert source.calls == [[2, 3]]  # one query, not sixteen


def test_clickhouse_down_serves_last_values_marked_stale(clean: Runtime) -> None:
    insert_events(clean.clickhouse, [follow(1, 2), follow(3, 2)])
    UserMetricsQueryService(clean).get_user_metrics([2])
    clean.redis.delete(metrics_key(2))  # the hash expired; ClickHouse is now unreachable
    broken = down_clickhouse(clean)
    service = UserMetricsQueryService(broken)
    got = service.get_user_metrics([2, 5])
    assert got[2].follower_count == 2 and got.stale == {2, 5}
    assert got.unavailable == {5} and got[5] == UserMetrics()
    # Reactions: cached images are served, the others are reported unknown; nothing raises
    reactions = UserReactionQueryService(broken.redis, lambda u, imgs: latest_reactions(broken.clickhouse, u, imgs))
    UserReactionQueryService(
        clean.redis, lambda u, imgs: latest_reactions(clean.clickhouse, u, imgs), fills=None
    ).get_user_reactions(7, [100])
    out = reactions.get_user_reactions(7, [100, 101])
    assert out == {100: 0, 101: 0} and out.unavailable == {101}


def test_redis_down_reads_go_to_clickhouse(clean: Runtime) -> None:
    insert_events(clean.clickhouse, [follow(1, 2), reaction(1, 100, MetricType.REACTION_HEART)])
    broken = down_redis(clean)
    got = UserMetricsQueryService(broken).get_user_metrics([2, 1])
    assert got[2].follower_count == 1 and not got.stale
    reactions = UserReactionQueryService(broken.redis, lambda u, imgs: latest_reactions(broken.clickhouse, u, imgs))
    assert reactions.get_user_reactions(1, [100, 101]) == {100: 2, 101: 0}
    assert UserMetricsQueryService(broken).get_user_rank(2) is None


def test_reactions_cache_first_negative_caching_and_ttl_renewal(clean: Runtime) -> None:
    insert_events(
        clean.clickhouse,
        [reaction(1, 100, MetricType.REACTION_LIKE), reaction(1, 100, MetricType.REACTION_CRY)],
    )
    calls: list[list[int]] = []

    def source(user_id: int, image_ids: Sequence[int]) -> dict[int, list[BitUpdate]]:
        calls.append(sorted(image_ids))
        return latest_reactions(clean.clickhouse, user_id, image_ids)

    service = UserReactionQueryService(clean.redis, source)
    assert service.get_user_reactions(1, [100, 101, 100]) == {100: 9, 101: 0}
    FILLS.drain()  # the misses are cached after the answer
    assert clean.redis.hgetall(flags_key(1)) == {"100": "9", "101": "0"}  # the absence is cached as 0
    clean.redis.expire(flags_key(1), 100)
    assert service.get_user_reactions(1, [101, 100]) == {101: 0, 100: 9}
    assert calls == [[100, 101]]  # the second read was all hits
    assert clean.redis.ttl(flags_key(1)) > 604_000  # renewed on read
    with pytest.raises(ValueError, match="at most 1000"):
        service.get_user_reactions(1, range(1001))


def test_reactions_fills_come_after_the_answer_and_overflow_runs_in_the_caller(
    clean: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    insert_events(
        clean.clickhouse, [reaction(1, 100, MetricType.REACTION_HEART), reaction(2, 100, MetricType.REACTION_CRY)]
    )
    fills, gate = CacheFills(limit=2), threading.Event()
    fills.submit(lambda: gate.wait(10))  # the fill thread is busy: one slot left
    service = UserReactionQueryService(
        clean.redis, lambda u, imgs: latest_reactions(clean.clickhouse, u, imgs), fills=fills
    )
    assert service.get_user_reactions(1, [100, 101]) == {100: 2, 101: 0}
    assert clean.redis.hgetall(flags_key(1)) == {}  # answered; its fill waits in the queue
    assert service.get_user_reactions(2, [100]) == {100: 8}
    assert clean.redis.hgetall(flags_key(2)) == {"100": "8"}  # no slot left: filled before the answer
    gate.set()
    fills.drain()
    assert clean.redis.hgetall(flags_key(1)) == {"100": "2", "101": "0"}

    # A fill that fails is logged and dropped, and frees its slot: the next read misses and fills again.
    def unreachable() -> None:
        raise ConnectionError("Redis went away")

    fills.submit(unreachable)
    fills.drain()
    assert "cache fill dropped" in caplog.text
    clean.redis.delete(flags_key(1), versions_key(1))
    assert service.get_user_reactions(1, [100]) == {100: 2}
    fills.drain()
    assert clean.redis.hgetall(flags_key(1)) == {"100": "2"}


def test_a_forked_child_gets_a_fill_thread_of_its_own(clean: Runtime) -> None:
    """A prefork worker or a preloading web server forks after the parent filled through the fill thread: the
    child's fills still run (it does not inherit a dead thread)."""
    import multiprocessing

    fills = CacheFills()
    fills.submit(lambda: clean.redis.set("test:fill:parent", 1, ex=60))
    fills.drain()

    def child() -> None:
        r = Runtime(clean.settings).redis  # its own connections
        fills.submit(lambda: r.set("test:fill:child", 1, ex=60))
        fills.drain()

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(20)
    if process.is_alive():  # its fill never ran
        process.kill()
    assert process.exitcode == 0
    assert clean.redis.get("test:fill:child") == "1"


def test_cache_service_set_clear_populate(clean: Runtime) -> None:
    from app.read.reactions_service import UserReactionCacheService

    insert_events(clean.clickhouse, [reaction(4, 300, MetricType.REACTION_LAUGH)])
    cache = UserReactionCacheService(clean.redis)
    cache.set_reaction(4, 301, 3)
    assert cache.get_user_reactions(4, [300, 301]) == {300: None, 301: 3}
    cache.populate_from_clickhouse(4, [300], lambda u, imgs: latest_reactions(clean.clickhouse, u, imgs))
    assert cache.get_user_reactions(4, [300]) == {300: 4}
    cache.clear_reaction(4, 301)
    assert cache.get_user_reactions(4, [301]) == {301: None}


def test_rank_reads_the_leaderboard_with_ties_by_lower_id(clean: Runtime) -> None:
    clean.redis.zadd(keys.leaderboard(), {"5": 10, "3": 7.5, "8": 7.5, "2": 0})
    clean.redis.expire(keys.leaderboard(), 60)
    service = UserMetricsQueryService(clean)
    assert [service.get_user_rank(u) for u in (5, 3, 8, 2, 99)] == [1, 2, 3, None, None]


def test_excluded_users_cli_changes_what_counts(clean: Runtime, run_cli: Any) -> None:
    long_ago = NOW - timedelta(days=90)
    insert_events(clean.clickhouse, [follow(1, 2, at=long_ago), follow(3, 2, at=long_ago)])
    assert UserMetricsQueryService(clean).get_user_metrics([2])[2].follower_count == 2
    assert run_cli("excluded-users", "add", "3", "--reason", "farm").exit_code == 0
    assert clean.redis.zscore(c.METRICS_DIRTY_KEY, "2") is not None  # the cached owner is queued for a recompute
    assert _followers_computed_afresh(clean, 2) == 1
    listed = run_cli("excluded-users", "list", "--json")
    assert [e["userId"] for e in __import__("json").loads(listed.output)] == [3]
    assert run_cli("excluded-users", "remove", "3").exit_code == 0
    assert _followers_computed_afresh(clean, 2) == 2


def _followers_computed_afresh(rt: Runtime, user: int, settle_s: float = 5.0) -> int:
    """The user's follower count from a read that misses the cache. A worker's refresher may be recomputing the
    user for the change's mark meanwhile, and its write may land after the hash is deleted, with a snapshot from
    before the change (at most once: its next cycle, for the newer mark, computes after the change). So: delete and
    read until two reads in a row agree, or ``settle_s`` passes."""
    deadline = time.monotonic() + settle_s
    last = None
    while True:
        rt.redis.delete(metrics_key(user))
        count = UserMetricsQueryService(rt).get_user_metrics([user])[user].follower_count
        if count == last or time.monotonic() > deadline:
            return count
        last = count
        time.sleep(0.05)


def test_cli_user_metrics_as_of_and_history(clean: Runtime, run_cli: Any) -> None:
    import json

    insert_events(
        clean.clickhouse,
        [follow(1, 2, at=NOW - timedelta(days=3)), follow(3, 2, at=NOW - timedelta(days=1)), follow(1, 2, False)],
    )
    now = json.loads(run_cli("user-metrics", "2", "--json").output)
    assert now["2"]["followerCount"] == 1
    past = json.loads(run_cli("user-metrics", "2", "--json", "--as-of", (NOW - timedelta(days=2)).isoformat()).output)
    assert past["2"]["followerCount"] == 1 and "stale" not in past["2"]
    since = (NOW - timedelta(days=4)).date().isoformat()
    series = json.loads(run_cli("history", "2", "followerCount", "--since", since, "--json").output)
    assert [p["value"] for p in series] == [0, 1, 1, 2, 1]
    table = run_cli("history", "2", "followerCount", "--since", since)
    assert table.exit_code == 0 and "followerCount" in table.output
    assert run_cli("history", "2", "nonsense", "--since", since).exit_code == 2
