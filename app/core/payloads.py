"""Task payloads: the JSON keyword arguments of every event task (their JSON Schemas are published in ``schemas/``).

The same models validate at the producer (nothing bad is enqueued), validate again in the worker (a raw producer
in another language may send anything), and generate the published JSON Schemas in ``schemas/``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Self

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from app.core import constants as c
from app.core.errors import ValidationError
from app.core.events import (
    REACTION_TYPES,
    STATE_OFF,
    STATE_ON,
    UPLOAD_ENTITY_TYPES,
    Event,
    MetricType,
    derive_event_id,
    from_epoch_ms,
)
from app.core.ids import MAX_ID, MIN_ID

UserId = Annotated[StrictInt, Field(ge=MIN_ID, le=MAX_ID, description="A positive 64-bit id.")]
EntityId = UserId
# Producers' clocks may run a little ahead; anything further is a bug upstream, not a future event.
MAX_CLOCK_SKEW = timedelta(hours=1)
MAX_BATCH_EVENTS = 10_000
_REACTION_BITS = [(int(flag), metric) for flag, metric in REACTION_TYPES.items()]
# The nil UUID is a sentinel inside the engagement SQL (a state key's "no event id"); no event may carry it.
NIL_EVENT_ID = uuid.UUID(int=0)
# Epoch milliseconds of 9999-12-31T23:59:59.999Z, the last instant a datetime holds; _check_time then applies the
# real bounds (not before 2000, not in the future).
_MAX_EPOCH_MS = 253_402_300_799_999


def _time_of_epoch_ms(value: int | float) -> datetime:
    """A numeric ``occurred_at`` as a time; NaN, infinities and numbers past any datetime are out of range."""
    if not 0 <= value <= _MAX_EPOCH_MS:  # NaN compares false: refused here too
        shown = repr(value) if isinstance(value, float) or abs(value) < 10**30 else "a huge number"
        raise ValueError(f"occurred_at {shown} is out of range: epoch milliseconds go from 0 to {_MAX_EPOCH_MS}")
    return from_epoch_ms(int(value))


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    occurred_at: Annotated[
        datetime | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "format": "date-time"},
                    {"type": "integer", "minimum": 0, "maximum": _MAX_EPOCH_MS, "description": "epoch milliseconds"},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(
        default=None,
        description="When it happened on the producer's clock: RFC 3339 with a zone, or epoch milliseconds.",
    )
    event_id: uuid.UUID | None = Field(
        default=None,
        description="Idempotency key assigned by the producer (UUID; time-ordered preferred; not the nil UUID).",
        json_schema_extra={"not": {"const": str(NIL_EVENT_ID)}},
    )

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("occurred_at must be RFC 3339 text or epoch milliseconds")
        if isinstance(value, int | float):
            return _time_of_epoch_ms(value)
        return value

    @field_validator("event_id")
    @classmethod
    def _check_event_id(cls, value: uuid.UUID | None) -> uuid.UUID | None:
        if value == NIL_EVENT_ID:
            raise ValueError(f"event_id must not be the nil UUID {NIL_EVENT_ID} (reserved)")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _check_time(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("occurred_at needs a time zone (RFC 3339), e.g. 2026-01-31T12:00:00Z")
        try:
            value = value.astimezone(UTC)
        except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00, before the first representable instant
            raise ValueError(f"occurred_at {value.isoformat()} is out of range") from exc
        if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError(f"occurred_at {value.isoformat()} is in the future")
        if value.year < 2000:
            raise ValueError(f"occurred_at {value.isoformat()} is before 2000")
        return value

    def to_events(self, event_id: uuid.UUID, occurred_at: datetime) -> list[Event]:
        raise NotImplementedError

    def _event(
        self,
        event_id: uuid.UUID,
        occurred_at: datetime,
        *,
        entity_type: str,
        entity_id: int,
        user_id: int,
        owner_id: int,
        metric_type: MetricType,
        metric_value: int,
    ) -> Event:
        return Event(
            event_id=self.event_id or event_id,
            entity_type=entity_type,
            entity_id=entity_id,
            user_id=user_id,
            owner_id=owner_id,
            metric_type=metric_type,
            metric_value=metric_value,
            created_at=self.occurred_at or occurred_at,
        )


class RecordFollow(_Payload):
    """``follower_id`` starts (or, with ``is_follow=false``, stops) following ``user_id``."""

    type: Literal["record_follow"] = Field(default="record_follow", exclude=True)
    follower_id: UserId
    user_id: UserId
    is_follow: StrictBool = True

    @model_validator(mode="after")
    def _not_self(self) -> Self:
        if self.follower_id == self.user_id:
            raise ValueError(f"a user cannot follow themselves (follower_id == user_id == {self.user_id})")
        return self

    def to_events(self, event_id: uuid.UUID, occurred_at: datetime) -> list[Event]:
        return [
            self._event(
                event_id,
                occurred_at,
                entity_type="User",
                entity_id=self.user_id,
                user_id=self.follower_id,
                owner_id=self.user_id,
                metric_type=MetricType.FOLLOW,
                metric_value=STATE_ON if self.is_follow else STATE_OFF,
            )
        ]


class RecordUpload(_Payload):
    """``user_id`` uploaded (or removed, with ``is_removed=true``) a model, post or image."""

    type: Literal["record_upload"] = Field(default="record_upload", exclude=True)
    user_id: UserId
    content_type: Literal["Model", "Post", "Image"]
    entity_id: EntityId
    is_removed: StrictBool = False

    def to_events(self, event_id: uuid.UUID, occurred_at: datetime) -> list[Event]:
        return [
            self._event(
                event_id,
                occurred_at,
                entity_type=self.content_type,
                entity_id=self.entity_id,
                user_id=self.user_id,
                owner_id=self.user_id,
                metric_type=MetricType.UPLOAD,
                metric_value=STATE_OFF if self.is_removed else STATE_ON,
            )
        ]


class SetReaction(_Payload):
    """The full new reaction state (bit flags) of ``user_id`` on ``image_id``; one state event per reaction."""

    type: Literal["set_reaction"] = Field(default="set_reaction", exclude=True)
    user_id: UserId
    image_id: EntityId
    reactions: Annotated[StrictInt, Field(ge=0, le=15, description="Like=1, Heart=2, Laugh=4, Cry=8.")]
    owner_id: UserId | None = None

    def to_events(self, event_id: uuid.UUID, occurred_at: datetime) -> list[Event]:
        parent = str(self.event_id or event_id)
        return [
            Event(
                event_id=derive_event_id(parent, metric.value),
                entity_type="Image",
                entity_id=self.image_id,
                user_id=self.user_id,
                owner_id=self.owner_id or 0,
                metric_type=metric,
                metric_value=STATE_ON if self.reactions & bit else STATE_OFF,
                created_at=self.occurred_at or occurred_at,
            )
            for bit, metric in _REACTION_BITS
        ]


class RecordEntityMetric(_Payload):
    """A generic metric event on any entity: additive (Download, Generation, Comment, View) or a state type."""

    type: Literal["record_entity_metric"] = Field(default="record_entity_metric", exclude=True)
    entity_type: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z]{0,31}$", description="e.g. Model, Post, Image")]
    entity_id: EntityId
    metric_type: MetricType
    metric_value: Annotated[
        StrictInt,
        Field(ge=-(2**31), lt=2**31, description="Additive: the amount; state: > 0 on, <= 0 off; Engagement: x10,000"),
    ] = 1
    user_id: UserId
    owner_id: UserId | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.metric_type is MetricType.FOLLOW and self.entity_type != "User":
            raise ValueError("Follow events are on entity_type User")
        if self.metric_type is MetricType.UPLOAD and self.entity_type not in UPLOAD_ENTITY_TYPES:
            raise ValueError(f"Upload events are on one of {', '.join(UPLOAD_ENTITY_TYPES)}")
        if self.metric_type is MetricType.ENGAGEMENT and (self.entity_type != "User" or self.entity_id != self.user_id):
            raise ValueError("Engagement is recorded on the user itself (entity_type User, entity_id == user_id)")
        return self

    def to_events(self, event_id: uuid.UUID, occurred_at: datetime) -> list[Event]:
        owner = self.owner_id or 0
        if self.metric_type is MetricType.FOLLOW:
            owner = self.entity_id
        elif self.metric_type in (MetricType.UPLOAD, MetricType.ENGAGEMENT):
            owner = self.user_id
        return [
            self._event(
                event_id,
                occurred_at,
                entity_type=self.entity_type,
                entity_id=self.entity_id,
                user_id=self.user_id,
                owner_id=owner,
                metric_type=self.metric_type,
                metric_value=self.metric_value,
            )
        ]


class _BatchFollow(RecordFollow):
    type: Literal["record_follow"]


class _BatchUpload(RecordUpload):
    type: Literal["record_upload"]


class _BatchReaction(SetReaction):
    type: Literal["set_reaction"]


class _BatchMetric(RecordEntityMetric):
    type: Literal["record_entity_metric"]


BatchItem = Annotated[_BatchFollow | _BatchUpload | _BatchReaction | _BatchMetric, Field(discriminator="type")]


class RecordEvents(_Payload):
    """Many events in one message, each ``{"type": <task name>, ...that task's kwargs}``."""

    type: Literal["record_events"] = Field(default="record_events", exclude=True)
    events: Annotated[list[BatchItem], Field(min_length=1, max_length=MAX_BATCH_EVENTS)]

    def to_events(self, event_id: uuid.UUID, occurred_at: datetime) -> list[Event]:
        parent = str(self.event_id or event_id)
        when = self.occurred_at or occurred_at
        out: list[Event] = []
        for index, item in enumerate(self.events):
            # An item's own event_id wins; derive one (deterministically) only for items without it.
            item_id = item.event_id or derive_event_id(parent, str(index))
            out.extend(item.to_events(item_id, when))
        return out


PAYLOADS: dict[str, type[_Payload]] = {
    c.RECORD_FOLLOW: RecordFollow,
    c.RECORD_UPLOAD: RecordUpload,
    c.SET_REACTION: SetReaction,
    c.RECORD_ENTITY_METRIC: RecordEntityMetric,
    c.RECORD_EVENTS: RecordEvents,
}

Payload = _Payload


def parse(task: str, kwargs: Mapping[str, Any]) -> Payload:
    """Validate a task's keyword arguments; raises ``ValidationError`` with a readable reason."""
    model = PAYLOADS.get(task)
    if model is None:
        raise ValidationError(f"unknown event task {task!r}; expected one of {', '.join(PAYLOADS)}")
    try:
        return model.model_validate(dict(kwargs))
    except pydantic.ValidationError as exc:
        raise ValidationError(f"{task}: {_summarise(exc)}") from exc


def _summarise(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
