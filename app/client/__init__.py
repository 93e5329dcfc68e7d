"""The web app's client: validate and enqueue event tasks, the seed's ``UserMetricEventService``, and dual write.

It imports only ``app.core`` (the payload models and task names) and pydantic, and Celery once ``sending_app`` is
called, so a web app that sends events loads neither ClickHouse, SQLAlchemy nor the worker. The fields of every event
are those of its payload model in ``app.core.payloads``; ``schemas/<task>.json`` publishes them for producers in other
languages.
"""

from app.client.dual_write import after_commit
from app.client.producer import EventProducer, build_event
from app.client.sending import sending_app
from app.client.services import UserMetricEventService
from app.core.errors import ValidationError

__all__ = ["EventProducer", "UserMetricEventService", "ValidationError", "after_commit", "build_event", "sending_app"]
