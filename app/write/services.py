"""The seed's ``UserMetricEventService``: what the web app calls where users follow, upload and engage.

Built on the producer helpers, which use the same payload models and task names as the workers.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from app.core import constants as c
from app.core.events import ENGAGEMENT_SCALE, MetricType
from app.write.producer import EventProducer


class UserMetricEventService:
    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def record_follow(
        self, follower_id: int, user_id: int, is_follow: bool = True, *, occurred_at: datetime | None = None
    ) -> uuid.UUID:
        """``follower_id`` follows (or unfollows) ``user_id``."""
        return self.producer.record_follow(follower_id, user_id, is_follow, occurred_at=occurred_at)

    def record_upload(
        self,
        user_id: int,
        content_type: str,
        entity_id: int,
        is_removed: bool = False,
        *,
        occurred_at: datetime | None = None,
    ) -> uuid.UUID:
        """A model, post or image was created (or removed) by ``user_id``."""
        return self.producer.record_upload(user_id, content_type, entity_id, is_removed, occurred_at=occurred_at)

    def record_engagement(
        self, user_id: int, score: Decimal | float, *, occurred_at: datetime | None = None
    ) -> uuid.UUID:
        """Record a measured engagement score (a gauge: the latest value counts), for the engagement trend."""
        scaled = int((Decimal(str(score)) * ENGAGEMENT_SCALE).to_integral_value())
        return self.producer.send(
            c.RECORD_ENTITY_METRIC,
            entity_type="User",
            entity_id=user_id,
            metric_type=MetricType.ENGAGEMENT.value,
            metric_value=scaled,
            user_id=user_id,
            **({"occurred_at": occurred_at} if occurred_at else {}),
        )
