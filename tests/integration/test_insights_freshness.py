"""Freshness of the read-time insights: an event sent with the producer through the real worker shows in growth,
retention, audience and activity within a second of the broker acknowledging the send (the worker buffers it,
the flusher writes it, and the next read computes from it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from app.client import EventProducer
from app.insights.service import UserInsightsService
from app.stores.runtime import Runtime
from tests.stack import wait_events, wait_until

pytestmark = pytest.mark.usefixtures("worker")

CREATOR, FAN, IMAGE = 930_001, 930_002, 930_101


def _today() -> date:
    return datetime.now(UTC).date()


def growth(rt: Runtime) -> bool:
    days = UserInsightsService(rt).growth(CREATOR, _today() - timedelta(days=1), _today())["days"]
    return bool(days[-1]["followers"] == 1 and days[-1]["gained"] == 1)


def retention(rt: Runtime) -> bool:
    cohorts = UserInsightsService(rt).retention(CREATOR, weeks=2)["cohorts"]  # two: the event may be last week's
    return [(c["size"], c["retained"][-1]) for c in cohorts if c["size"]] == [(1, 1)]


def audience(rt: Runtime) -> bool:
    answer = UserInsightsService(rt).audience(CREATOR, _today() - timedelta(days=1), _today())
    return bool(answer["reactions"]["nonFollowers"] == 1 and answer["downloads"]["nonFollowers"] == 3)


def activity(rt: Runtime) -> bool:
    answer = UserInsightsService(rt).activity(CREATOR, days=1)
    return sum(map(sum, answer["grid"])) == 4  # the reaction (1) and the download (3)


def send_follow(producer: EventProducer) -> int:
    producer.record_follow(FAN, CREATOR)
    return 1


def send_reaction_and_download(producer: EventProducer) -> int:
    producer.set_reaction(
        user_id=FAN, image_id=IMAGE, reactions=1, owner_id=CREATOR
    )  # one state event per reaction type: four events
    producer.record_entity_metric(
        entity_type="Image", entity_id=IMAGE, metric_type="Download", metric_value=3, user_id=FAN, owner_id=CREATOR
    )
    return 5


@pytest.mark.parametrize(
    ("send", "shows"),
    [(send_follow, growth), (send_follow, retention), (send_reaction_and_download, audience)]
    + [(send_reaction_and_download, activity)],
    ids=["growth", "retention", "audience", "activity"],
)
def test_an_acknowledged_event_shows_in_the_insight_within_a_second(
    clean: Runtime,
    producer: EventProducer,
    send: Callable[[EventProducer], int],
    shows: Callable[[Runtime], bool],
) -> None:
    producer.record_upload(user_id=CREATOR, content_type="Image", entity_id=IMAGE)
    wait_events(clean, 1)
    assert not shows(clean)
    send(producer)  # returns once the broker acknowledged the messages
    wait_until(lambda: shows(clean), f"the insight {shows.__name__} to show the event", timeout_s=1.0)
