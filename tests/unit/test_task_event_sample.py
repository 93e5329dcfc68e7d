"""The event tasks' task-event sample: which messages send their task events, and the settings that choose it.

The rule is a pure function of the task id (``tasks.base.sampled``): the same id makes the same choice in every
worker and on every redelivery, so all the events of one message are sent or none are. A worker applying it is
tested end to end in tests/e2e/test_task_events.py.
"""

from __future__ import annotations

import uuid

import pytest

from app.core.settings import Settings
from tasks.base import sampled

IDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"task-{i}")) for i in range(20_000)]


def test_none_and_every_message() -> None:
    assert not any(sampled(task_id, 0.0) for task_id in IDS)
    assert all(sampled(task_id, 1.0) for task_id in IDS)


@pytest.mark.parametrize("share", [0.01, 0.1, 0.5])
def test_a_share_samples_about_that_share_of_ids(share: float) -> None:
    picked = sum(sampled(task_id, share) for task_id in IDS)
    assert abs(picked / len(IDS) - share) < 4 * (share * (1 - share) / len(IDS)) ** 0.5 + 1e-9


def test_a_larger_share_keeps_every_id_a_smaller_one_picked() -> None:
    # Raising the sample on a running deployment adds messages to Flower's view; it never swaps them.
    small = {task_id for task_id in IDS if sampled(task_id, 0.01)}
    large = {task_id for task_id in IDS if sampled(task_id, 0.1)}
    assert small < large


def test_the_sample_setting_and_its_deprecated_predecessor() -> None:
    def share(**env: str) -> float:
        return Settings.model_validate(env).event_task_events_share

    assert share() == 0.01
    assert share(EVENT_TASK_EVENTS_SAMPLE="0.25") == 0.25
    assert share(EVENT_TASK_EVENTS="true") == 1.0
    assert share(EVENT_TASK_EVENTS="false") == 0.0
    assert share(EVENT_TASK_EVENTS="true", EVENT_TASK_EVENTS_SAMPLE="0.05") == 0.05
    for bad in ("-0.1", "1.5"):
        with pytest.raises(ValueError, match="EVENT_TASK_EVENTS_SAMPLE"):
            share(EVENT_TASK_EVENTS_SAMPLE=bad)
