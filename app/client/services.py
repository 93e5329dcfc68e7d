"""The seed's ``UserMetricEventService``: what the web app calls where users follow, upload and engage.

Its follow and upload methods are the producer's (same parameters, same validation, same task names as the
workers); it adds the seed's ``record_engagement``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from app.client.producer import EventProducer
from app.core.events import ENGAGEMENT_SCALE, MetricType


def _producer_method(name: str) -> Callable[..., uuid.UUID]:
    """A method that calls the producer's method ``name`` (its signature and docstring shown as its own)."""

    @functools.wraps(getattr(EventProducer, name))
    def method(self: UserMetricEventService, /, *args: Any, **kwargs: Any) -> uuid.UUID:
        send: Callable[..., uuid.UUID] = getattr(self.producer, name)
        return send(*args, **kwargs)

    return method


class UserMetricEventService:
    """The seed's service on top of ``producer``."""

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    record_follow = _producer_method("record_follow")
    record_upload = _producer_method("record_upload")

    def record_engagement(
        self, user_id: int, score: Decimal | float, *, occurred_at: datetime | None = None
    ) -> uuid.UUID:
        """Record a measured engagement score (a gauge: the latest value counts), for the engagement trend."""
        scaled = int((Decimal(str(score)) * ENGAGEMENT_SCALE).to_integral_value())
        return self.producer.record_entity_metric(
            entity_type="User",
            entity_id=user_id,
            metric_type=MetricType.ENGAGEMENT.value,
            metric_value=scaled,
            user_id=user_id,
            occurred_at=occurred_at,
        )
