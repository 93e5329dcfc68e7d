"""Two flushers (in two worker processes) resolving owners at the same time, with the interleaving forced step by
step instead of hoped for: flusher A holds an orphan event (its entity's Upload not stored yet), flusher B holds
that Upload; each resolves before the other's insert is visible, then both insert. Without a second look after
the insert neither adopts the orphan and the owner never gets its engagement; with it, one of them does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.core.events import Event, MetricType
from app.derived.metrics_from_log import compute_user_metrics
from app.stores.clickhouse import insert_events
from app.stores.runtime import Runtime
from app.write import owners
from tests.stack import merge_the_log


def _event(entity_id: int, user: int, owner: int, metric: MetricType, value: int = 1) -> Event:
    at = datetime.now(UTC) - timedelta(days=1)
    return Event(uuid.uuid4(), "Image", entity_id, user, owner, metric, value, at)


def test_an_orphan_and_its_upload_resolved_by_two_flushers_at_once_end_owned(clean: Runtime) -> None:
    ch = clean.clickhouse
    comment = _event(101, user=1, owner=0, metric=MetricType.COMMENT)  # no owner named: an orphan until the Upload
    upload = _event(101, user=2, owner=2, metric=MetricType.UPLOAD)
    # Given both flushers resolve before either has inserted
    a = owners.resolve(ch, [comment])
    b = owners.resolve(ch, [upload])
    assert a.events[0].owner_id == 0 and not b.adopted  # neither can see the other's row yet
    # When both insert
    insert_events(ch, a.events + a.adopted)
    insert_events(ch, b.events + b.adopted)
    before = compute_user_metrics(ch, [2], weights=clean.weights, window=clean.window)[2].engagement_score
    # Then the look after the insert (in either order) adopts the orphan
    late = owners.adopt_after_insert(ch, a.events) + owners.adopt_after_insert(ch, b.events)
    assert {e.event_id for e in late} == {comment.event_id} and all(e.owner_id == 2 for e in late)
    insert_events(ch, late)
    after = compute_user_metrics(ch, [2], weights=clean.weights, window=clean.window)[2].engagement_score
    assert before == 0 and float(after) == 1.5  # Comment weight 1.5, by another user, within the window


def test_a_redelivered_orphan_stored_after_its_adoption_stays_owned_through_merges(clean: Runtime) -> None:
    """The log collapses rows with the same key and event id, and a merge keeps the one inserted last. A flusher
    that resolved a redelivered orphan before the Upload was visible, and inserts it after another flusher adopted
    it, stores the orphan row last: its look after the insert must write the owned row again, or the next merge
    drops the owner's copy for good."""
    ch = clean.clickhouse
    comment = _event(102, user=1, owner=0, metric=MetricType.COMMENT)
    upload = _event(102, user=2, owner=2, metric=MetricType.UPLOAD)
    insert_events(ch, owners.resolve(ch, [comment]).events)  # the first delivery: an orphan
    redelivered = owners.resolve(ch, [comment])  # flusher A resolves the redelivery: still an orphan
    b = owners.resolve(ch, [upload])  # flusher B holds the Upload and adopts the stored orphan
    assert redelivered.events[0].owner_id == 0 and [e.event_id for e in b.adopted] == [comment.event_id]
    insert_events(ch, b.events + b.adopted)
    insert_events(ch, redelivered.events)  # A's orphan row lands after B's owned one
    late = owners.adopt_after_insert(ch, redelivered.events) + owners.adopt_after_insert(ch, b.events)
    insert_events(ch, late)
    merge_the_log(clean)
    (owned,) = ch.rows(
        "SELECT countIf(ownerId = 2) FROM entityMetricEvents WHERE eventId = {e:UUID}", {"e": comment.event_id}
    )[0]
    score = compute_user_metrics(ch, [2], weights=clean.weights, window=clean.window)[2].engagement_score
    assert owned >= 1 and float(score) == 1.5
