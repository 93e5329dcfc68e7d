"""Event ids are idempotency keys: the first payload written under an id wins.

A redelivery says the same thing again and is harmless (every table is idempotent in ``eventId``). A message that
reuses an id for something else (a producer bug, a replayed id with edited fields) would otherwise land in some
tables and not others: the state tables keep it as another key, the additive buckets drop it as a duplicate.
So the flusher checks each batch against the registry ``eventIds`` (``sql/0007``), which a materialized view
fills from every insert into the event log, and dead-letters the events whose id is already taken by another
payload. Within one batch the first event in buffer order wins.

The fingerprint covers what an event means (entity, actor, metric, value, time), not ``ownerId``: the flusher
fills in an orphan event's owner later and writes the event again under the same id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from app.core.events import Event
from app.stores.clickhouse import ClickHouse

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_LOOKUP_SQL = """
SELECT eventId, argMax(fingerprint, version)
FROM eventIds
WHERE eventId IN {values}
GROUP BY eventId
"""


def fingerprint(e: Event) -> int:
    """``halfMD5`` of the event's identity, exactly as the ``eventIdsMv`` view computes it in ClickHouse."""
    ms = (e.created_at - _EPOCH) // _MS
    text = f"{e.entity_type}|{e.entity_id}|{e.user_id}|{e.metric_type.value}|{e.metric_value}|{ms}"
    return int.from_bytes(hashlib.md5(text.encode(), usedforsecurity=False).digest()[:8], "big")


def conflicts(ch: ClickHouse, events: Sequence[Event]) -> dict[int, str]:
    """Positions in ``events`` of those that reuse a taken event id with another payload, with the reason."""
    if not events:
        return {}
    ids = list({e.event_id for e in events})
    taken = {str(eid): int(fp) for eid, fp in ch.rows_for(_LOOKUP_SQL, ids, "UUID")}
    out: dict[int, str] = {}
    for pos, e in enumerate(events):
        key, fp = str(e.event_id), fingerprint(e)
        first = taken.setdefault(key, fp)
        if first != fp:
            out[pos] = f"event_id {key} was first written with another payload; the first one wins"
    return out
