"""The published JSON Schemas match the models, and accept/refuse what the worker accepts/refuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest

from app.core.paths import REPO
from app.core.payloads import PAYLOADS
from app.ops import schemas

GOOD = {
    "record_follow": {"follower_id": 1, "user_id": 2, "is_follow": False, "occurred_at": 1767225600000},
    "record_upload": {"user_id": 1, "content_type": "Post", "entity_id": 9, "occurred_at": "2026-01-01T00:00:00Z"},
    "set_reaction": {"user_id": 1, "image_id": 3, "reactions": 5, "owner_id": 2},
    "record_entity_metric": {
        "entity_type": "Model",
        "entity_id": 4,
        "metric_type": "Download",
        "metric_value": 2,
        "user_id": 1,
        "owner_id": 7,
    },
    "record_events": {
        "events": [
            {"type": "record_follow", "follower_id": 1, "user_id": 2},
            {"type": "set_reaction", "user_id": 1, "image_id": 3, "reactions": 0},
        ]
    },
}
BAD = {
    "record_follow": {"follower_id": "1", "user_id": 2},
    "record_upload": {"user_id": 1, "content_type": "Video", "entity_id": 9},
    "set_reaction": {"user_id": 1, "image_id": 3, "reactions": 16},
    "record_entity_metric": {"entity_type": "Model", "entity_id": 4, "metric_type": "Teleport", "user_id": 1},
    "record_events": {"events": [{"type": "record_nothing"}]},
}


def load(task: str) -> dict:  # type: ignore[type-arg]
    return json.loads((schemas.SCHEMA_DIR / f"{task}.json").read_text())


def test_committed_schemas_match_the_models() -> None:
    assert schemas.drifted() == [], "run `python -m app schemas --write` and commit schemas/"


@pytest.mark.parametrize("task", list(PAYLOADS))
def test_schema_and_model_agree_on_good_and_bad_payloads(task: str) -> None:
    validator = jsonschema.Draft202012Validator(load(task), format_checker=jsonschema.FormatChecker())
    validator.validate(GOOD[task])
    PAYLOADS[task].model_validate(GOOD[task])
    assert not validator.is_valid(BAD[task])
    with pytest.raises(ValueError):
        PAYLOADS[task].model_validate(BAD[task])


def test_what_the_producer_sends_validates_against_the_schema() -> None:
    payload = PAYLOADS["record_follow"].model_validate(
        {
            "follower_id": 1,
            "user_id": 2,
            "occurred_at": datetime.now(UTC),
            "event_id": "0190a4f2-7b9c-7000-8000-000000000001",
        }
    )
    jsonschema.validate(payload.model_dump(mode="json", exclude_none=True), load("record_follow"))


def test_aggregate_views_list_the_state_types_of_the_code() -> None:
    """The materialized views name the state types in SQL; they must be exactly the code's STATE_TYPES."""
    import re

    from app.core.events import GAUGE_TYPES, STATE_TYPES

    text = (REPO / "sql" / "0003_read_aggregates.sql").read_text()
    state = {m.value for m in STATE_TYPES}
    for listed in re.findall(r"metricType (NOT )?IN \(([^)]*)\)", text):
        names = set(re.findall(r"'(\w+)'", listed[1]))
        assert names in (state, state | {m.value for m in GAUGE_TYPES}), names
