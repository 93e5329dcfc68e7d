"""Import path for web apps: ``from app.services import UserMetricEventService`` (in ``app.write.services``)."""

from app.write.services import UserMetricEventService

__all__ = ["UserMetricEventService"]
