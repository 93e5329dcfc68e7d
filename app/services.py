"""Import path kept for web apps: ``from app.services import UserMetricEventService`` (see ``app.client``)."""

from app.client import UserMetricEventService

__all__ = ["UserMetricEventService"]
