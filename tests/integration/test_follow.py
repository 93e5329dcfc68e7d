"""record_follow end to end through a real worker: producer → broker → worker → buffer → ClickHouse → Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.caches import metrics_cache
from app.caches.metrics_cache import metrics_key, version_key
from app.core.errors import ValidationError
from app.read.metrics_service import UserMetricsQueryService
from bench.oracle import E, Oracle
from tests.properties import examples
from tests.stack import prime, wait_drained, wait_events, wipe_clickhouse

pytestmark = pytest.mark.usefixtures("worker")


def cached(rt, *users):  # type: ignore[no-untyped-def]
    return metrics_cache.read(rt.redis, users)


def test_follow_reaches_clickhouse_and_cache(clean, producer):  # type: ignore[no-untyped-def]
    prime(clean, 1, 2, 3)
    producer.record_follow(1, 2)
    producer.record_follow(3, 2)
    wait_drained(clean)
    rows = clean.clickhouse.rows("SELECT userId, entityId, metricValue FROM entityMetricEvents ORDER BY userId")
    assert rows == [(1, 2, 1), (3, 2, 1)]
    got = cached(clean, 1, 2, 3)
    assert got[2] is not None and got[2].follower_count == 2
    assert got[1] is not None and got[1].following_count == 1
    for key in (metrics_key(1), metrics_key(2), metrics_key(3)):
        assert 0 < clean.redis.ttl(key) <= 3600


def test_duplicate_delivery_counts_once(clean, producer):  # type: ignore[no-untyped-def]
    # Given the same follow delivered twice (same event id), and a second follow of the same pair
    prime(clean, 10, 20)
    event_id = uuid.uuid4()
    producer.send("record_follow", follower_id=10, user_id=20, event_id=event_id)
    producer.send("record_follow", follower_id=10, user_id=20, event_id=event_id)
    producer.record_follow(10, 20)
    wait_drained(clean)
    # Then the follower is counted once
    assert cached(clean, 20)[20].follower_count == 1  # type: ignore[union-attr]
    assert cached(clean, 10)[10].following_count == 1  # type: ignore[union-attr]


def test_unfollow_delivered_before_its_older_follow(clean, producer):  # type: ignore[no-untyped-def]
    prime(clean, 5, 6)
    now = datetime.now(UTC)
    producer.record_follow(5, 6, is_follow=False, occurred_at=now)
    wait_drained(clean)
    producer.record_follow(5, 6, occurred_at=now - timedelta(seconds=10))
    wait_drained(clean)
    assert cached(clean, 6)[6].follower_count == 0  # type: ignore[union-attr]
    assert cached(clean, 5)[5].following_count == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"follower_id": 7, "user_id": 7}, "cannot follow themselves"),
        ({"follower_id": 0, "user_id": 7}, "greater than or equal to 1"),
        ({"follower_id": -3, "user_id": 7}, "greater than or equal to 1"),
        ({"follower_id": "1", "user_id": 7}, "valid integer"),
        ({"follower_id": 1.0, "user_id": 7}, "valid integer"),
        ({"follower_id": True, "user_id": 7}, "valid integer"),
        ({"follower_id": 1, "user_id": 7, "is_follow": "yes"}, "valid boolean"),
        ({"follower_id": 1, "user_id": 7, "extra": 1}, "Extra inputs"),
        ({"follower_id": 1}, "Field required"),
    ],
)
def test_producer_refuses_bad_input_and_enqueues_nothing(clean, producer, kwargs, message):  # type: ignore[no-untyped-def]

    from app.stores.broker import queue_stats
    from tests.stack import BROKER_URL

    def depth() -> int:
        return queue_stats(BROKER_URL, ["events"])["events"].depth

    before = depth()
    with pytest.raises(ValidationError, match=message):
        producer.send("record_follow", **kwargs)
    assert depth() == before


def test_query_service_fills_cache_on_miss(clean, producer):  # type: ignore[no-untyped-def]
    producer.record_follow(31, 32)
    wait_drained(clean)
    clean.redis.delete(metrics_key(32), version_key(32))
    service = UserMetricsQueryService(clean)
    got = service.get_user_metrics([32, 32, 999])
    assert list(got) == [32, 999]
    assert got[32].follower_count == 1 and got[999].follower_count == 0
    assert clean.redis.hget(metrics_key(32), "followerCount") == "1"
    assert service.get_user_follower_count(32) == 1


# Property: any history of follows and unfollows, delivered with duplicates and in any order, gives the
# counts of the same events applied once in time order.
users = st.integers(min_value=1, max_value=5)
follow_events = st.lists(
    st.tuples(users, users, st.booleans(), st.integers(min_value=0, max_value=20)).filter(lambda t: t[0] != t[1]),
    min_size=1,
    max_size=25,
)


@settings(max_examples=examples(20), deadline=None, suppress_health_check=list(HealthCheck))
@given(history=follow_events, data=st.data())
def test_follow_counts_match_oracle_under_duplicates_and_reordering(clean, producer, history, data):  # type: ignore[no-untyped-def]
    wait_drained(clean)
    clean.redis.flushdb()
    wipe_clickhouse(clean)
    prime(clean, 1, 2, 3, 4, 5)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    sent = []
    for follower, user, on, seconds in history:
        sent.append(
            dict(
                follower_id=follower,
                user_id=user,
                is_follow=on,
                event_id=uuid.uuid4(),
                occurred_at=base + timedelta(seconds=seconds),
            )
        )
    # Deliver with duplicates, in a shuffled order.
    dupes = data.draw(st.lists(st.sampled_from(sent), max_size=10))
    delivery = data.draw(st.permutations(sent + dupes))
    for kwargs in delivery:
        producer.send("record_follow", **kwargs)
    wait_events(clean, len(sent))

    oracle = Oracle(now=datetime.now(UTC))
    oracle.apply_all(
        [
            E(
                str(k["event_id"]),
                "User",
                k["user_id"],
                k["follower_id"],
                k["user_id"],
                "Follow",
                1 if k["is_follow"] else -1,
                k["occurred_at"],
            )
            for k in sent
        ]
    )
    got = cached(clean, 1, 2, 3, 4, 5)
    for uid in range(1, 6):
        m = got[uid]
        expected = oracle.metrics(uid)
        assert m is not None
        assert m.follower_count == expected.get("followerCount", 0), uid
        assert m.following_count == expected.get("followingCount", 0), uid
        assert m.engagement_score == expected["engagementScore"], uid
