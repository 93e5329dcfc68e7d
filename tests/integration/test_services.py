"""The seed's UserMetricEventService, owner conflicts, and the traffic simulator, through a real worker."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from app.caches import metrics_cache
from app.client import UserMetricEventService
from app.write import deadletters
from tests.stack import prime, wait_drained, wait_events

pytestmark = pytest.mark.usefixtures("worker")


def test_event_service_records_follows_uploads_and_engagement(clean, producer):  # type: ignore[no-untyped-def]
    prime(clean, 1, 2)
    service = UserMetricEventService(producer)
    service.record_follow(1, 2)
    service.record_upload(2, "Model", 900)
    service.record_upload(2, "Post", 901)
    service.record_upload(2, "Post", 901, is_removed=True)
    service.record_engagement(2, Decimal("12.5"))
    wait_events(clean, 5)
    m = metrics_cache.read(clean.redis, [2])[2]
    assert m is not None
    assert (m.follower_count, m.model_count, m.post_count, m.upload_count) == (1, 1, 0, 1)
    # The engagement gauge is recorded for the trend, scaled by 10,000, and does not feed any count.
    rows = clean.clickhouse.rows(
        "SELECT entityType, entityId, userId, metricValue FROM entityMetricEvents WHERE metricType = 'Engagement'"
    )
    assert rows == [("User", 2, 2, 125_000)]
    assert m.engagement_score == Decimal("0.1")  # only the follow, weight 0.1


def test_a_web_app_sends_through_its_own_sending_app(clean):  # type: ignore[no-untyped-def]
    from app.client import EventProducer, sending_app
    from app.stores.broker import broker_url

    # Given a producer on the client's own Celery app (no worker configuration imported), on the stack's broker
    prime(clean, 7, 8)
    producer = EventProducer(sending_app(broker_url(clean.settings)))
    # When it sends a follow
    producer.record_follow(7, 8)
    # Then the worker counts it
    wait_events(clean, 1)
    m = metrics_cache.read(clean.redis, [8])[8]
    assert m is not None and m.follower_count == 1


def test_owner_id_contradicting_the_upload_is_dead_lettered(clean, producer):  # type: ignore[no-untyped-def]
    prime(clean, 1, 2)
    producer.record_upload(1, "Image", 500)
    wait_events(clean, 1)
    # Given a reaction whose producer claims user 2 owns image 500, which user 1 uploaded
    producer.set_reaction(3, 500, 2, owner_id=2)
    deadline = time.monotonic() + 10
    while not deadletters.list_letters(clean.redis) and time.monotonic() < deadline:
        time.sleep(0.05)
    wait_drained(clean)
    letters = deadletters.list_letters(clean.redis)
    assert len(letters) == 1 and "contradicts the Upload" in letters[0].reason
    # Then nothing of it was counted for either user, and a correct reaction still is
    producer.set_reaction(3, 500, 2)  # owner resolved from the Upload
    wait_events(clean, 5)
    got = metrics_cache.read(clean.redis, [1, 2])
    assert got[1].reaction_count == 1 and got[2].reaction_count == 0  # type: ignore[union-attr]


def test_simulate_drives_traffic_through_the_task_path(clean, run_cli):  # type: ignore[no-untyped-def]
    prime(clean, 1, 2, 3)
    result = run_cli(
        *[
            "simulate",
            "--users",
            "30",
            "--events",
            "300",
            "--rate",
            "0",
            "--duplicates",
            "0.1",
            "--out-of-order",
            "0.1",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    wait_drained(clean, 60)
    assert deadletters.count(clean.redis) == 0
    assert clean.clickhouse.rows("SELECT count() > 250 FROM entityMetricEvents") == [(1,)]
    # The cached hashes of the primed (most popular) users equal a fresh computation.
    from app.derived.metrics_from_log import compute_user_metrics

    fresh = compute_user_metrics(clean.clickhouse, [1, 2, 3], weights=clean.weights, window=clean.window)
    cached = metrics_cache.read(clean.redis, [1, 2, 3])
    for uid in (1, 2, 3):
        assert cached[uid] is not None and cached[uid].to_json() == fresh[uid].to_json()  # type: ignore[union-attr]
