"""The client's methods: the parameters web apps call them with, derived from the payload models, and the messages
they send."""

from __future__ import annotations

import inspect
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from celery import Celery

from app.client import EventProducer, UserMetricEventService, ValidationError
from app.core import constants as c

# The methods' parameters as web apps call them (positional or keyword, then keyword-only occurred_at).
PARAMETERS = {
    "record_follow": "(follower_id, user_id, is_follow=True, *, occurred_at=None)",
    "record_upload": "(user_id, content_type, entity_id, is_removed=False, *, occurred_at=None)",
    "set_reaction": "(user_id, image_id, reactions, owner_id=None, *, occurred_at=None)",
    "record_entity_metric": (
        "(entity_type, entity_id, metric_type, metric_value, user_id, owner_id=None, *, occurred_at=None)"
    ),
    "record_events": "(events, *, occurred_at=None)",
}


class Recorder(Celery):
    """A Celery app that records what it is asked to send instead of sending it."""

    def __init__(self) -> None:
        super().__init__("webapp")
        self.sent: list[tuple[str, dict[str, Any], str]] = []

    def send_task(self, name: str, *args: Any, **options: Any) -> Any:  # type: ignore[override]
        self.sent.append((name, options["kwargs"], options["queue"]))


def _names(method: Any) -> str:
    shown = inspect.signature(method).replace(return_annotation=inspect.Signature.empty)
    return str(shown.replace(parameters=[p.replace(annotation=p.empty) for p in shown.parameters.values()]))


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_producer_methods_take_the_same_arguments_as_always(name: str) -> None:
    assert _names(getattr(EventProducer(Recorder()), name)) == PARAMETERS[name]


def test_service_methods_are_the_producers() -> None:
    service = UserMetricEventService(EventProducer(Recorder()))
    assert _names(service.record_follow) == PARAMETERS["record_follow"]
    assert _names(service.record_upload) == PARAMETERS["record_upload"]
    assert _names(service.record_engagement) == "(user_id, score, *, occurred_at=None)"


def test_positional_and_keyword_calls_send_the_same_message() -> None:
    celery = Recorder()
    producer = EventProducer(celery)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = producer.record_entity_metric("Model", 4, "Download", 2, 1, occurred_at=when)
    second = producer.record_entity_metric(
        entity_type="Model", entity_id=4, metric_type="Download", metric_value=2, user_id=1, occurred_at=when
    )
    (task_a, body_a, queue_a), (task_b, body_b, queue_b) = celery.sent
    assert (task_a, queue_a) == (task_b, queue_b) == (c.RECORD_ENTITY_METRIC, c.EVENTS_QUEUE)
    assert body_a.pop("event_id") == str(first) and body_b.pop("event_id") == str(second) and first != second
    assert body_a == body_b
    # owner_id left out is not sent; the worker resolves the owner
    assert body_a == {
        "entity_type": "Model",
        "entity_id": 4,
        "metric_type": "Download",
        "metric_value": 2,
        "user_id": 1,
        "occurred_at": "2026-01-02T03:04:05Z",
    }


def test_defaults_come_from_the_model_and_occurred_at_is_now_unless_given() -> None:
    celery = Recorder()
    before = datetime.now(UTC)
    event_id = EventProducer(celery).record_follow(1, 2)
    [(task, body, _)] = celery.sent
    assert task == c.RECORD_FOLLOW and uuid.UUID(body["event_id"]) == event_id
    assert body["is_follow"] is True
    assert datetime.fromisoformat(body["occurred_at"]) >= before.replace(microsecond=0)


def test_a_bad_call_raises_and_sends_nothing() -> None:
    celery = Recorder()
    producer = EventProducer(celery)
    with pytest.raises(TypeError, match="user_id"):
        producer.record_follow(1)
    with pytest.raises(TypeError, match="event_type"):
        producer.record_follow(1, 2, event_type="x")
    with pytest.raises(ValidationError, match=r"set_reaction: owner_id: "):
        producer.set_reaction(1, 100, 3, owner_id=0)
    assert celery.sent == []


def test_the_service_records_engagement_as_a_scaled_gauge_on_the_user() -> None:
    celery = Recorder()
    UserMetricEventService(EventProducer(celery)).record_engagement(7, Decimal("12.5"))
    [(task, body, _)] = celery.sent
    assert task == c.RECORD_ENTITY_METRIC
    assert (body["entity_type"], body["entity_id"], body["user_id"]) == ("User", 7, 7)
    assert (body["metric_type"], body["metric_value"]) == ("Engagement", 125_000)


def test_each_batched_event_gets_its_own_event_id_unless_it_has_one() -> None:
    celery = Recorder()
    own = str(uuid.uuid4())
    EventProducer(celery).record_events(
        [
            {"type": "record_follow", "follower_id": 1, "user_id": 2},
            {"type": "set_reaction", "user_id": 1, "image_id": 3, "reactions": 0, "event_id": own},
        ]
    )
    [(task, body, _)] = celery.sent
    first, second = body["events"]
    assert task == c.RECORD_EVENTS and first["event_id"] != own and second["event_id"] == own
