"""Property: for any history written to ClickHouse with duplicates, in any order, over several inserts, the read
path serves what the oracle computes from the same events applied once in order: current values (aggregate
tables, with excluded users), values as of past instants (raw log), and daily history series.

Events go into ClickHouse directly (owners already known): the write path has its own properties; here the read
side is under test, with the real engine and real Redis.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.events import Event, MetricType
from app.derived.metrics_from_log import compute_user_metrics
from app.read.history import METRICS as HISTORY_METRICS
from app.read.history import metric_history
from app.read.metrics_service import UserMetricsQueryService
from app.read.reactions_service import latest_reactions
from app.stores.clickhouse import insert_events
from app.write.excluded import set_excluded
from bench.oracle import E, Oracle
from tests.properties import examples
from tests.stack import wipe_clickhouse

USERS = (1, 2, 3, 4)
IMAGES = (100, 101, 102)
MODELS = (200,)
OWNER = {100: 1, 101: 2, 102: 4, 200: 3}
NOW = datetime.now(UTC).replace(microsecond=0)
# Hours back from NOW, away from the 30-day window's edge (the system's "now" is a few seconds later than NOW).
offsets = st.one_of(st.integers(0, 25 * 24), st.integers(35 * 24, 60 * 24)).map(lambda h: timedelta(hours=h))
users = st.sampled_from(USERS)
REACTION_METRICS = ("ReactionLike", "ReactionHeart", "ReactionLaugh", "ReactionCry")


@st.composite
def an_event(draw: Any) -> E:
    kind = draw(st.sampled_from(["follow", "upload", "reaction", "reaction", "additive"]))
    # Few distinct seconds per hour: ties on createdAt happen and are broken by eventId.
    at = NOW - draw(offsets) - timedelta(seconds=draw(st.integers(0, 1)))
    event_id = str(draw(st.uuids()))
    on = 1 if draw(st.booleans()) else -1
    if kind == "follow":
        a, b = draw(st.lists(users, min_size=2, max_size=2, unique=True))
        return E(event_id, "User", b, a, b, "Follow", on, at)
    if kind == "upload":
        entity = draw(st.sampled_from(IMAGES + MODELS))
        etype = "Image" if entity in IMAGES else "Model"
        return E(event_id, etype, entity, OWNER[entity], OWNER[entity], "Upload", on, at)
    if kind == "reaction":
        image = draw(st.sampled_from(IMAGES))
        return E(event_id, "Image", image, draw(users), OWNER[image], draw(st.sampled_from(REACTION_METRICS)), on, at)
    entity = draw(st.sampled_from(IMAGES + MODELS))
    etype = "Image" if entity in IMAGES else "Model"
    metric = draw(st.sampled_from(["Download", "Generation", "Comment", "View"]))
    return E(event_id, etype, entity, draw(users), OWNER[entity], metric, draw(st.integers(1, 3)), at)


def to_event(e: E) -> Event:
    return Event(
        uuid.UUID(e.event_id),
        e.entity_type,
        e.entity_id,
        e.user_id,
        e.owner_id,
        MetricType(e.metric_type),
        e.value,
        e.at,
    )


def oracle_at(history: list[E], at: datetime, excluded: set[int]) -> Oracle:
    oracle = Oracle(now=at, excluded=excluded)
    oracle.apply_all([e for e in history if e.at <= at])
    return oracle


def assert_metrics(got: dict[str, Any], expected: dict[str, object], context: object) -> None:
    for name in ("followerCount", "followingCount", "modelCount", "imageCount", "uploadCount", "reactionCount"):
        assert got[name] == expected.get(name, 0), (name, got, expected, context)
    for name in ("downloadCount", "generationCount"):
        assert got[name] == expected.get(name, 0), (name, got, expected, context)
    assert got["engagementScore"] == float(expected.get("engagementScore", Decimal(0))), (got, expected, context)


@settings(max_examples=examples(25), deadline=None, suppress_health_check=list(HealthCheck))
@given(history=st.lists(an_event(), min_size=1, max_size=40, unique_by=lambda e: e.event_id), data=st.data())
def test_current_values_as_of_and_history_match_the_oracle(clean, history, data):  # type: ignore[no-untyped-def]
    clean.redis.flushdb()
    wipe_clickhouse(clean)
    # Given the events inserted with redeliveries, shuffled, over several inserts (several parts to merge)
    dupes = data.draw(st.lists(st.sampled_from(history), max_size=10))
    delivery = data.draw(st.permutations(history + dupes))
    cut = data.draw(st.integers(0, len(delivery)))
    for part in (delivery[:cut], delivery[cut:]):
        insert_events(clean.clickhouse, [to_event(e) for e in part])
    excluded = set(data.draw(st.lists(users, max_size=1)))
    set_excluded(clean, excluded, excluded=True, reason="test")

    # Then current values (aggregate tables) equal the oracle, computed directly and served through the cache
    oracle = oracle_at(history, datetime.now(UTC), excluded)
    computed = compute_user_metrics(clean.clickhouse, USERS, weights=clean.weights, window=clean.window)
    service = UserMetricsQueryService(clean)
    served = service.get_user_metrics(list(USERS) + [USERS[0]])
    assert list(served) == list(USERS) and not served.stale
    for uid in USERS:
        assert_metrics(computed[uid].to_json(), oracle.metrics(uid), ("current", uid, excluded))
        assert served[uid] == computed[uid]

    # And values as of past instants (raw log) equal the oracle at those instants
    for days in data.draw(st.lists(st.integers(1, 50), min_size=1, max_size=2, unique=True)):
        instant = NOW - timedelta(days=days, minutes=30)
        past = oracle_at(history, instant, excluded)
        as_of = service.get_user_metrics(USERS, as_of=instant)
        for uid in USERS:
            assert_metrics(as_of[uid].to_json(), past.metrics(uid), ("as_of", days, uid))

    # And daily history series of every metric: every point is the oracle's value at the end of its day
    start, end = NOW - timedelta(days=62), NOW
    day_ends = [
        min(start.replace(hour=0, minute=0, second=0) + timedelta(days=i + 1, milliseconds=-1), end) for i in range(63)
    ]
    expected_by_day = [oracle_at(history, at, excluded) for at in day_ends]
    for uid in USERS:
        for metric in (m for m in HISTORY_METRICS if m != "engagementScore"):
            points = metric_history(clean.clickhouse, uid, metric, start, end, "day")
            assert len(points) == 63 and points[0].at == start.replace(hour=0, minute=0, second=0)
            for point, past in zip(points, expected_by_day, strict=True):
                assert point.value == past.metrics(uid).get(metric, 0), (metric, uid, point)

    # And reactions read from the latest-state table are the oracle's flags
    for user in USERS:
        states = latest_reactions(clean.clickhouse, user, IMAGES)
        for image, bits in states.items():
            assert sum(b.bit for b in bits if b.on) == oracle.reactions(user, image)
