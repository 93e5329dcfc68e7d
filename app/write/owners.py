"""Who owns an entity: the producer says so (``owner_id``), or the entity's latest ``Upload`` event does.

Resolved at write time, so every row carries ``ownerId`` and owner-side metrics need no join. An event whose
entity has no known owner yet (no Upload, no producer named one) is written with ``ownerId = 0`` (an orphan); once
an owner is known, the orphans are written again with it (same ``eventId``, so nothing is counted twice:
owner-side queries and aggregates filter on the owner and never see the 0 rows). Without an Upload, the owner a
producer named before also applies to later events that name none. A producer-given owner that contradicts the
Upload is wrong data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from app.core.events import UPLOAD_ENTITY_TYPES, Event, MetricType, as_utc
from app.stores.clickhouse import ClickHouse, chunked

Entity = tuple[str, int]

# Per entity: the uploader (latest Upload wins) if there is an Upload, else the owner earlier events named.
_KNOWN_OWNERS_SQL = """
SELECT entityType, entityId,
       argMaxIf(userId, (createdAt, toString(eventId)), metricType = 'Upload'),
       countIf(metricType = 'Upload'),
       max(ownerId)
FROM entityMetricEvents
WHERE (entityType, entityId) IN {entities:Array(Tuple(String, Int64))}
GROUP BY entityType, entityId
"""

# Rows written before their entity's owner was known, and not yet written again with it.
_ORPHANS_SQL = """
SELECT DISTINCT eventId, entityType, entityId, userId, metricType, metricValue, createdAt
FROM entityMetricEvents
WHERE (entityType, entityId) IN {entities:Array(Tuple(String, Int64))} AND ownerId = 0 AND metricType != 'Upload'
  AND eventId NOT IN (
      SELECT eventId FROM entityMetricEvents
      WHERE (entityType, entityId) IN {entities:Array(Tuple(String, Int64))} AND ownerId != 0)
"""


@dataclass
class Resolution:
    events: list[Event] = field(default_factory=list)
    conflicts: dict[str, str] = field(default_factory=dict)  # event id → reason
    adopted: list[Event] = field(default_factory=list)  # orphans written again with their owner


def _owned(e: Event) -> bool:
    return e.entity_type in UPLOAD_ENTITY_TYPES and e.metric_type is not MetricType.UPLOAD


def _known_owners(ch: ClickHouse, events: Sequence[Event]) -> tuple[dict[Entity, int], set[Entity]]:
    """Owner per entity of the batch, and which of them an Upload establishes (the others were only named)."""
    uploads: dict[Entity, tuple[tuple[datetime, str], int]] = {}
    for e in events:
        if e.metric_type is MetricType.UPLOAD:
            key = (e.entity_type, e.entity_id)
            rank = (e.created_at, str(e.event_id))
            if key not in uploads or rank > uploads[key][0]:
                uploads[key] = (rank, e.user_id)
    known: dict[Entity, int] = {k: v for k, (_, v) in uploads.items()}
    by_upload = set(known)
    wanted = sorted({(e.entity_type, e.entity_id) for e in events if _owned(e)} - by_upload)
    named: dict[Entity, int] = {}
    rows = [row for part in chunked(wanted) for row in ch.rows(_KNOWN_OWNERS_SQL, {"entities": part})]
    if rows:
        for etype, eid, uploader, n_uploads, owner in rows:
            key = (str(etype), int(eid))
            if int(n_uploads):
                known[key] = int(uploader)
                by_upload.add(key)
            elif int(owner):
                named[key] = int(owner)
    for e in events:
        key = (e.entity_type, e.entity_id)
        if _owned(e) and e.owner_id and key not in by_upload:
            named[key] = max(named.get(key, 0), e.owner_id)
    return {**named, **known}, by_upload


def resolve(ch: ClickHouse, events: Sequence[Event]) -> Resolution:
    """Fill missing owners, flag ones that contradict an Upload, and adopt orphans of entities with an owner."""
    known, by_upload = _known_owners(ch, events)
    out = Resolution()
    for e in events:
        key = (e.entity_type, e.entity_id)
        owner = known.get(key) if _owned(e) else None
        if owner is None or e.owner_id == owner:
            out.events.append(e)
        elif e.owner_id == 0 or key not in by_upload:
            out.events.append(dataclasses.replace(e, owner_id=owner))
        else:
            out.conflicts[str(e.event_id)] = (
                f"owner_id {e.owner_id} contradicts the Upload of {e.entity_type} {e.entity_id} by user {owner}"
            )

    adoptable = sorted({(e.entity_type, e.entity_id) for e in events} & set(known))
    orphans = [row for part in chunked(adoptable) for row in ch.rows(_ORPHANS_SQL, {"entities": part})]
    if orphans:
        for event_id, etype, eid, user, metric, value, created in orphans:
            out.adopted.append(
                Event(
                    event_id=event_id,
                    entity_type=str(etype),
                    entity_id=int(eid),
                    user_id=int(user),
                    owner_id=known[(str(etype), int(eid))],
                    metric_type=MetricType(metric),
                    metric_value=int(value),
                    created_at=as_utc(created),
                )
            )
    return out


def adopt_after_insert(ch: ClickHouse, written: Sequence[Event]) -> list[Event]:
    """Orphans to write again with their owner, looked up *after* this batch's insert.

    Two flushers (in two processes) can interleave: one writes an orphan (its entity's Upload not stored yet) while
    the other resolves and writes that Upload, and each looked before the other's insert became visible. Looking
    again once this batch is stored closes that window: of two inserts, the later one's look sees the earlier one's
    rows, so either the orphan's writer finds the Upload or the Upload's writer finds the orphan. Re-writing an
    event that the other flusher also adopted is harmless (same event id, same owner).

    This batch's own orphans whose owner is now known are written again even when an owned row of theirs is
    already stored: the log collapses rows with the same key and event id, and a merge keeps the one inserted
    last. A redelivered orphan resolved before the Upload was visible, and stored after another flusher adopted
    the event, would otherwise be the row that survives, and the owner's copy would be gone after the next merge.
    """
    if not any(_owned(e) or e.metric_type is MetricType.UPLOAD for e in written):
        return []
    again = resolve(ch, written)
    orphaned_here = {str(e.event_id) for e in written if _owned(e) and not e.owner_id}
    mine = [e for e in again.events if e.owner_id and str(e.event_id) in orphaned_here]
    taken = {str(e.event_id) for e in mine}
    return mine + [e for e in again.adopted if str(e.event_id) not in taken]
