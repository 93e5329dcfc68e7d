"""Events: the rows of ``entityMetricEvents`` and the two families of metric types
(docs/architecture.md, "The metrics").

*State* types assert an on/off state of a key ``(entityType, entityId, metricType, userId)``; the state is the
value of the key's latest event by ``(createdAt, eventId)``. *Additive* types add their value once per distinct
``eventId``. Nothing here sums state events: that is the seeds' bug this project exists to avoid.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntFlag, StrEnum


class MetricType(StrEnum):
    FOLLOW = "Follow"
    UPLOAD = "Upload"
    REACTION_LIKE = "ReactionLike"
    REACTION_HEART = "ReactionHeart"
    REACTION_LAUGH = "ReactionLaugh"
    REACTION_CRY = "ReactionCry"
    DOWNLOAD = "Download"
    GENERATION = "Generation"
    COMMENT = "Comment"
    VIEW = "View"
    ENGAGEMENT = "Engagement"


# Metric types by name (a dict lookup: the flusher converts every buffered event).
METRIC_TYPES: dict[str, MetricType] = {m.value: m for m in MetricType}


STATE_TYPES: frozenset[MetricType] = frozenset(
    {
        MetricType.FOLLOW,
        MetricType.UPLOAD,
        MetricType.REACTION_LIKE,
        MetricType.REACTION_HEART,
        MetricType.REACTION_LAUGH,
        MetricType.REACTION_CRY,
    }
)
# Gauges record a measured value (the seed's Engagement score, in units of 1/10,000); the latest one counts.
GAUGE_TYPES: frozenset[MetricType] = frozenset({MetricType.ENGAGEMENT})
ADDITIVE_TYPES: frozenset[MetricType] = frozenset(set(MetricType) - STATE_TYPES - GAUGE_TYPES)


class ReactionFlag(IntFlag):
    """Bit flags of ``reactions:{userId}`` (docs/architecture.md, "Redis keys")."""

    LIKE = 1
    HEART = 2
    LAUGH = 4
    CRY = 8


REACTION_TYPES: dict[ReactionFlag, MetricType] = {
    ReactionFlag.LIKE: MetricType.REACTION_LIKE,
    ReactionFlag.HEART: MetricType.REACTION_HEART,
    ReactionFlag.LAUGH: MetricType.REACTION_LAUGH,
    ReactionFlag.CRY: MetricType.REACTION_CRY,
}

# Entity types that are uploaded; their owner is the user of their latest Upload event.
UPLOAD_ENTITY_TYPES = ("Model", "Post", "Image")
ENGAGEMENT_SCALE = 10_000

# Value written for "on" and "off" state events. Readers only look at the sign (value > 0 is on).
STATE_ON = 1
STATE_OFF = -1

# Namespace for event ids derived from other ids (a Celery task id, a parent event id, a legacy row key).
EVENT_ID_NAMESPACE = uuid.UUID("6f1c8a52-3b0e-4c55-9a0f-5d2b7c9e41aa")


def as_utc(at: datetime) -> datetime:
    """``at`` in UTC; a naive time (ClickHouse and SQLite return them) is taken to be UTC already."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes
# RFC 4122 version 5 and variant bits, as ``uuid.uuid5`` sets them.
_VERSION_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_5 = (0x5000 << 64) | (0x8000 << 48)


def derive_event_id(parent: uuid.UUID | str, name: str) -> uuid.UUID:
    """A deterministic child id: the same parent and name always give the same event id.

    Exactly ``uuid.uuid5(EVENT_ID_NAMESPACE, f"{parent}/{name}")``, computed directly because it runs once per
    item of a 500-event message and four times per reaction; pass ``parent`` as a string where one parent has
    many children.
    """
    digest = hashlib.sha1(_NAMESPACE_BYTES + f"{parent}/{name}".encode(), usedforsecurity=False).digest()
    return uuid.UUID(int=(int.from_bytes(digest[:16], "big") & _VERSION_CLEAR) | _VERSION_5)


def uuid5_sql(name: str) -> str:
    """ClickHouse SQL for ``uuid.uuid5(EVENT_ID_NAMESPACE, <name>)``, ``name`` an SQL string expression: the same
    ids as :func:`derive_event_id` (``name`` = ``'<parent>/<name>'``) for ids derived in bulk inside the engine."""
    s = f"SHA1(concat(unhex('{EVENT_ID_NAMESPACE.hex}'), {name}))"
    return (
        "toUUID(UUIDNumToString(toFixedString(concat("
        f"substring({s}, 1, 6), "
        f"char(bitOr(bitAnd(reinterpretAsUInt8(substring({s}, 7, 1)), 15), 80)), "
        f"substring({s}, 8, 1), "
        f"char(bitOr(bitAnd(reinterpretAsUInt8(substring({s}, 9, 1)), 63), 128)), "
        f"substring({s}, 10, 7)), 16)))"
    )


_last_v7 = 0
_v7_lock = threading.Lock()
_V7_RAND_BITS = 74  # rand_a (12 bits) and rand_b (62 bits)


def new_event_id() -> uuid.UUID:
    """A time-ordered UUID (version 7): later events sort later, which keeps inserts local in ClickHouse.

    Monotonic within the process (RFC 9562, 6.2 method 2): an id minted in the same millisecond as the previous
    one, or after the clock stepped back, is the previous id plus one. Ties on ``createdAt`` are broken by
    ``eventId``, so without this two events a producer sends in one millisecond (an upload and its removal)
    would take effect in a random order.
    """
    global _last_v7
    ms = int(datetime.now(UTC).timestamp() * 1000) & ((1 << 48) - 1)
    rand = uuid.uuid4().int & ((1 << _V7_RAND_BITS) - 1)
    with _v7_lock:
        packed = (ms << _V7_RAND_BITS) | rand
        if packed <= _last_v7:
            packed = _last_v7 + 1
        _last_v7 = packed
    ms, rand = packed >> _V7_RAND_BITS, packed & ((1 << _V7_RAND_BITS) - 1)
    value = ms << 80
    value |= 0x7 << 76
    value |= (rand >> 62) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


@dataclass(slots=True)
class Event:
    """One row of ``entityMetricEvents``. ``owner_id`` 0 means not known at write time.

    Not frozen on purpose: a frozen dataclass's ``__init__`` costs several times more, and events are built by
    the thousand per batch. Treat instances as values (``dataclasses.replace`` to change one).
    """

    event_id: uuid.UUID
    entity_type: str
    entity_id: int
    user_id: int
    owner_id: int
    metric_type: MetricType
    metric_value: int
    created_at: datetime

    @property
    def is_state(self) -> bool:
        return self.metric_type in STATE_TYPES

    @property
    def is_on(self) -> bool:
        return self.metric_value > 0

    def to_json(self) -> dict[str, str | int]:
        return {
            "eventId": str(self.event_id),
            "entityType": self.entity_type,
            "entityId": self.entity_id,
            "userId": self.user_id,
            "ownerId": self.owner_id,
            "metricType": self.metric_type.value,
            "metricValue": self.metric_value,
            "createdAtMs": epoch_ms(self.created_at),
        }

    def to_row(self) -> list[str | int]:
        """Compact form for the event buffer (positional, in ``ROW_FIELDS`` order)."""
        return [
            str(self.event_id),
            self.entity_type,
            self.entity_id,
            self.user_id,
            self.owner_id,
            self.metric_type,  # a str: JSON writes its value
            self.metric_value,
            epoch_ms(self.created_at),
        ]

    @classmethod
    def from_row(cls, row: list[str | int], times: dict[int, datetime] | None = None) -> Event:
        """The inverse of ``to_row``. ``times``: a cache of converted timestamps, shared by the rows of a batch
        (the events of one message mostly share their time, and the conversion is most of the cost)."""
        event_id, entity_type, entity_id, user_id, owner_id, metric_type, value, ms = row
        at = times.get(int(ms)) if times is not None else None
        if at is None:
            at = from_epoch_ms(int(ms))
            if times is not None:
                times[int(ms)] = at
        return cls(
            uuid.UUID(str(event_id)),
            str(entity_type),
            int(entity_id),
            int(user_id),
            int(owner_id),
            METRIC_TYPES[str(metric_type)],
            int(value),
            at,
        )

    @classmethod
    def from_json(cls, data: dict[str, str | int]) -> Event:
        return cls(
            event_id=uuid.UUID(str(data["eventId"])),
            entity_type=str(data["entityType"]),
            entity_id=int(data["entityId"]),
            user_id=int(data["userId"]),
            owner_id=int(data["ownerId"]),
            metric_type=MetricType(str(data["metricType"])),
            metric_value=int(data["metricValue"]),
            created_at=from_epoch_ms(int(data["createdAtMs"])),
        )

    def affected_users(self) -> tuple[int, ...]:
        """Users whose ``user:metrics`` hash this event can change: the actor and the owner."""
        if self.owner_id and self.owner_id != self.user_id:
            return (self.user_id, self.owner_id)
        return (self.user_id,)


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_epoch_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
