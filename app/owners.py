"""Who owns an entity: the producer says so (``owner_id``), or the entity's latest ``Upload`` event does.

Resolved at write time, so every row carries ``ownerId`` and owner-side metrics need no join. An event whose
entity has no Upload yet is written with ``ownerId = 0`` (an orphan); when the Upload arrives, the orphans are
written again with the owner (same ``eventId``, so nothing is counted twice: owner-side queries filter on the
owner and never see the 0 rows). A producer-given owner that contradicts the Upload is wrong data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.clickhouse import ClickHouse
from app.events import UPLOAD_ENTITY_TYPES, Event, MetricType

Entity = tuple[str, int]

_UPLOAD_OWNERS_SQL = """
SELECT entityType, entityId, argMax(userId, (createdAt, toString(eventId)))
FROM entityMetricEvents
WHERE metricType = 'Upload' AND (entityType, entityId) IN {entities:Array(Tuple(String, Int64))}
GROUP BY entityType, entityId
"""

_ORPHANS_SQL = """
SELECT DISTINCT eventId, entityType, entityId, userId, metricType, metricValue, createdAt
FROM entityMetricEvents
WHERE (entityType, entityId) IN {entities:Array(Tuple(String, Int64))} AND ownerId = 0 AND metricType != 'Upload'
"""


@dataclass
class Resolution:
    events: list[Event] = field(default_factory=list)
    conflicts: dict[str, str] = field(default_factory=dict)  # event id → reason
    adopted: list[Event] = field(default_factory=list)  # orphans written again with their owner


def _owned(e: Event) -> bool:
    return e.entity_type in UPLOAD_ENTITY_TYPES and e.metric_type is not MetricType.UPLOAD


def resolve(ch: ClickHouse, events: Sequence[Event]) -> Resolution:
    """Fill missing owners, flag contradicting ones, and adopt orphans of entities uploaded in this batch."""
    owners: dict[Entity, tuple[tuple[datetime, str], int]] = {}
    for e in events:
        if e.metric_type is MetricType.UPLOAD:
            key = (e.entity_type, e.entity_id)
            rank = (e.created_at, str(e.event_id))
            if key not in owners or rank > owners[key][0]:
                owners[key] = (rank, e.user_id)
    known: dict[Entity, int] = {k: v for k, (_, v) in owners.items()}
    wanted = sorted({(e.entity_type, e.entity_id) for e in events if _owned(e)} - set(known))
    if wanted:
        for etype, eid, owner in ch.rows(_UPLOAD_OWNERS_SQL, {"entities": wanted}):
            known[(str(etype), int(eid))] = int(owner)

    out = Resolution()
    for e in events:
        owner = known.get((e.entity_type, e.entity_id)) if _owned(e) else None
        if owner is None:
            out.events.append(e)
        elif e.owner_id == 0:
            out.events.append(dataclasses.replace(e, owner_id=owner))
        elif e.owner_id != owner:
            out.conflicts[str(e.event_id)] = (
                f"owner_id {e.owner_id} contradicts the Upload of {e.entity_type} {e.entity_id} by user {owner}"
            )
        else:
            out.events.append(e)

    uploaded = sorted(owners)
    if uploaded:
        for event_id, etype, eid, user, metric, value, created in ch.rows(_ORPHANS_SQL, {"entities": uploaded}):
            out.adopted.append(
                Event(
                    event_id=event_id,
                    entity_type=str(etype),
                    entity_id=int(eid),
                    user_id=int(user),
                    owner_id=known[(str(etype), int(eid))],
                    metric_type=MetricType(metric),
                    metric_value=int(value),
                    created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
                )
            )
    return out
