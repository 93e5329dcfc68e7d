"""Property: any history of events, delivered with duplicates, in any order, some batched, through a real worker,
gives every metric and every cached reaction the oracle computes from the same events applied once in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.caches import metrics_cache
from app.caches.metrics_cache import metrics_key
from app.derived.metrics_from_log import compute_user_metrics
from app.read.reactions_service import FILLS, UserReactionQueryService, latest_reactions
from app.stores.runtime import Runtime
from bench.oracle import Oracle, events_of
from tests.properties import examples
from tests.stack import prime, wait_drained, wait_events, wipe_clickhouse

pytestmark = pytest.mark.usefixtures("worker")

# Few ids, so that histories collide on the same keys often (toggles, double follows, ties).
USERS = (1, 2, 3)
IMAGES = (100, 101)
MODELS = (200,)
OWNER = {100: 1, 101: 2, 200: 3}  # every entity has one uploader
NOW = datetime.now(UTC).replace(microsecond=0)
# Offsets avoid the engagement window's edge (30 days), where "now" differs between system and oracle.
offsets = st.one_of(st.integers(0, 20 * 24), st.integers(35 * 24, 40 * 24)).map(lambda h: timedelta(hours=h))
users = st.sampled_from(USERS)


@st.composite
def an_event(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(["follow", "upload", "reaction", "metric"]))
    at = NOW - draw(offsets) - timedelta(seconds=draw(st.integers(0, 3)))
    base: dict[str, Any] = {"event_id": str(draw(st.uuids())), "occurred_at": at.isoformat()}
    if kind == "follow":
        a, b = draw(st.lists(users, min_size=2, max_size=2, unique=True))
        return {"type": "record_follow", "follower_id": a, "user_id": b, "is_follow": draw(st.booleans()), **base}
    if kind == "upload":
        entity = draw(st.sampled_from(IMAGES + MODELS))
        return {
            "type": "record_upload",
            "user_id": OWNER[entity],
            "content_type": "Image" if entity in IMAGES else "Model",
            "entity_id": entity,
            "is_removed": draw(st.booleans()),
            **base,
        }
    if kind == "reaction":
        image = draw(st.sampled_from(IMAGES))
        owner = {"owner_id": OWNER[image]} if draw(st.booleans()) else {}
        return {
            "type": "set_reaction",
            "user_id": draw(users),
            "image_id": image,
            "reactions": draw(st.integers(0, 15)),
            **owner,
            **base,
        }
    entity = draw(st.sampled_from(IMAGES + MODELS))
    owner = {"owner_id": OWNER[entity]} if draw(st.booleans()) else {}
    return {
        "type": "record_entity_metric",
        "entity_type": "Image" if entity in IMAGES else "Model",
        "entity_id": entity,
        "metric_type": draw(st.sampled_from(["Download", "Generation", "Comment", "View"])),
        "metric_value": draw(st.integers(1, 3)),
        "user_id": draw(users),
        **owner,
        **base,
    }


def assert_computed_and_cached_match(rt: Runtime, oracle: Oracle, context: object = None) -> None:
    """Every metric of ``USERS``, computed from ClickHouse and read from the cache, is the oracle's."""
    computed = compute_user_metrics(rt.clickhouse, USERS, weights=rt.weights, window=rt.window)
    cached = metrics_cache.read(rt.redis, USERS)
    for uid in USERS:
        expected = oracle.metrics(uid)
        for m in (computed[uid], cached[uid]):
            assert m is not None
            got = m.to_json()
            for name, value in expected.items():
                assert got[name] == (float(value) if name == "engagementScore" else value), (
                    uid,
                    name,
                    m is computed[uid],
                    got,
                    expected,
                    context,
                )
            assert got["uploadCount"] == got["modelCount"] + got["postCount"] + got["imageCount"]


@settings(max_examples=examples(30), deadline=None, suppress_health_check=list(HealthCheck))
@given(history=st.lists(an_event(), min_size=3, max_size=30), data=st.data())
def test_every_metric_and_reaction_matches_the_oracle(clean, producer, history, data):  # type: ignore[no-untyped-def]
    wait_drained(clean)
    FILLS.drain()  # an earlier example's reactions fills land before the slate is wiped
    clean.redis.flushdb()
    wipe_clickhouse(clean)
    prime(clean, *USERS)  # cached hashes the write path must keep current
    # Given a delivery with duplicates, shuffled, part of it batched in record_events messages
    dupes = data.draw(st.lists(st.sampled_from(history), max_size=8))
    delivery = data.draw(st.permutations(history + dupes))
    batch_size = data.draw(st.sampled_from([1, 1, 5]))
    # Several waves, each drained before the next, so that late events meet caches built from earlier flushes.
    waves = data.draw(st.integers(1, 3))
    for i in range(0, len(delivery), batch_size):
        chunk = delivery[i : i + batch_size]
        if len(chunk) == 1:
            kwargs = {k: v for k, v in chunk[0].items() if k != "type"}
            producer.send(chunk[0]["type"], **kwargs)
        else:
            producer.send("record_events", events=chunk)
        if waves > 1 and (i // batch_size) % (len(delivery) // waves + 1) == 0:
            wait_drained(clean)
    expected_events = events_of(history)
    wait_events(clean, len({e.event_id for e in expected_events}))

    oracle = Oracle(now=datetime.now(UTC))
    oracle.apply_all(expected_events)

    assert_computed_and_cached_match(clean, oracle, context=history)
    for uid in USERS:
        assert 0 < clean.redis.ttl(metrics_key(uid)) <= 3600

    # Cached reactions (written by the flusher) and reads through the query service equal the oracle.
    for uid in USERS:
        from app.caches import reactions_cache

        raw = reactions_cache.read(clean.redis, uid, IMAGES)
        for image, flags in raw.items():
            if flags is not None:
                assert flags == oracle.reactions(uid, image), (uid, image)
        service = UserReactionQueryService(clean.redis, lambda u, imgs: latest_reactions(clean.clickhouse, u, imgs))
        assert service.get_user_reactions(uid, IMAGES) == {i: oracle.reactions(uid, i) for i in IMAGES}


def test_a_key_whose_latest_event_predates_owner_knowledge_is_still_owned(clean, producer):  # type: ignore[no-untyped-def]
    # Given a reaction turned on with the owner known, then off by a later message that did not name the owner
    # (image never uploaded, so the later event is an orphan with owner 0)
    prime(clean, 1)
    base = NOW - timedelta(hours=1)
    producer.set_reaction(2, 100, 1, owner_id=1, occurred_at=base)
    producer.set_reaction(2, 100, 0, occurred_at=base + timedelta(seconds=1))
    wait_events(clean, 8)
    # Then the key is off for its owner: no reaction counted, no engagement
    got = metrics_cache.read(clean.redis, [1])[1]
    assert got is not None and got.reaction_count == 0 and float(got.engagement_score) == 0.0
