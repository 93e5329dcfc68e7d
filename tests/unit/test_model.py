"""The pure parts of the model, without any service: ids, payloads, events, metrics, settings, errors, messages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core import constants as c
from app.core.errors import (
    ClickHouseRejected,
    ClickHouseUnavailable,
    PermanentError,
    ValidationError,
)
from app.core.events import (
    EVENT_ID_NAMESPACE,
    STATE_OFF,
    STATE_ON,
    MetricType,
    as_utc,
    derive_event_id,
    new_event_id,
)
from app.core.ids import check_ids
from app.core.metrics import SCORE_SCALE, EngagementWeights, UserMetrics, format_score
from app.core.payloads import parse
from app.core.settings import Settings
from app.jobs.ranks import ranked
from app.stores.errors import translate_clickhouse
from tasks.consumer import body_problem, headers_problem, queue_tasks


@given(parent=st.uuids(), name=st.text(max_size=40))
def test_derived_event_ids_are_uuid5(parent: uuid.UUID, name: str) -> None:
    expected = uuid.uuid5(EVENT_ID_NAMESPACE, f"{parent}/{name}")
    assert derive_event_id(parent, name) == expected
    assert derive_event_id(str(parent), name) == expected
    assert expected.version == 5


def test_new_event_ids_are_v7_and_strictly_increasing_within_a_millisecond() -> None:
    # Given thousands of ids minted back to back (many share a millisecond)
    ids = [new_event_id() for _ in range(5000)]
    # Then each sorts after the one before, so an upload and its removal sent in one millisecond keep their order
    assert all(a.int < b.int for a, b in zip(ids, ids[1:], strict=False))
    assert {u.version for u in ids} == {7} and {u.variant for u in ids} == {uuid.RFC_4122}
    assert len({u.int >> 80 for u in ids}) < len(ids)  # the case that matters did occur


def test_new_event_ids_keep_increasing_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.core.events as events

    first = new_event_id()

    class Past(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return datetime(2001, 1, 1, tzinfo=UTC)

    monkeypatch.setattr(events, "datetime", Past)
    assert new_event_id().int > first.int


def test_set_reaction_is_four_state_events_with_derived_ids() -> None:
    payload = parse(
        c.SET_REACTION, {"user_id": 1, "image_id": 2, "reactions": 0b0101, "event_id": str(uuid.UUID(int=7))}
    )
    events = payload.to_events(uuid.uuid4(), datetime(2026, 1, 1, tzinfo=UTC))
    assert [e.metric_type for e in events] == [
        MetricType.REACTION_LIKE,
        MetricType.REACTION_HEART,
        MetricType.REACTION_LAUGH,
        MetricType.REACTION_CRY,
    ]
    assert [e.metric_value for e in events] == [STATE_ON, STATE_OFF, STATE_ON, STATE_OFF]
    assert [e.event_id for e in events] == [derive_event_id(uuid.UUID(int=7), e.metric_type.value) for e in events]


@pytest.mark.parametrize(
    ("task", "kwargs", "says"),
    [
        (c.RECORD_FOLLOW, {"follower_id": 1, "user_id": 1}, "cannot follow themselves"),
        (c.RECORD_FOLLOW, {"follower_id": 0, "user_id": 1}, "follower_id"),
        (c.SET_REACTION, {"user_id": 1, "image_id": 2, "reactions": 16}, "reactions"),
        (c.RECORD_UPLOAD, {"user_id": 1, "content_type": "Video", "entity_id": 3}, "content_type"),
        ("record_nothing", {}, "unknown event task"),
    ],
)
def test_bad_payloads_are_refused_with_the_reason(task: str, kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        parse(task, kwargs)


def test_ids_must_be_positive_int64() -> None:
    assert check_ids([1, 2**63 - 1]) == [1, 2**63 - 1]
    for bad in (0, -1, 2**63, 2**64 + 913):
        with pytest.raises(PermanentError):
            check_ids([bad])


def test_as_utc() -> None:
    naive = datetime(2026, 5, 1, 12, 0)
    assert as_utc(naive) == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    paris = datetime(2026, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(paris) == datetime(2026, 5, 1, 12, 0, tzinfo=UTC) and as_utc(paris).tzinfo == UTC


@given(
    counts=st.lists(st.integers(min_value=0, max_value=10**9), min_size=9, max_size=9),
    score=st.integers(min_value=-(10**12), max_value=10**12),
    rank=st.none() | st.integers(min_value=1, max_value=10**7),
)
def test_user_metrics_round_trip_through_the_hash(counts: list[int], score: int, rank: int | None) -> None:
    m = UserMetrics(*counts, engagement_score=Decimal(score) / SCORE_SCALE, rank=rank)  # type: ignore[arg-type]
    back = UserMetrics.from_hash(m.to_hash())
    assert back == m
    assert ("rank" in m.to_hash()) == (rank is not None)


def test_scores_format_without_noise() -> None:
    assert format_score(Decimal("12.5000")) == "12.5"
    assert format_score(Decimal("-0.00001")) == "0"
    assert format_score(Decimal(0)) == "0"


def test_weights_scale_and_default() -> None:
    w = EngagementWeights.from_settings({"Follow": Decimal("1"), "Download": Decimal("0.25"), "*": Decimal("0.5")})
    assert w.by_type == {"Follow": 10_000, "Download": 2_500} and w.default == 5_000
    assert w.params() == {"wtypes": ["Download", "Follow"], "wvalues": [2_500, 10_000], "wdefault": 5_000}


def test_ranks_order_by_score_then_lower_id() -> None:
    assert ranked({5: 10, 3: 10, 9: 20, 4: 0, 8: -1}) == [(9, 20, 1), (3, 10, 2), (5, 10, 3)]


@pytest.mark.parametrize(
    ("url", "database", "embedded"),
    [
        (None, "usermetrics", True),
        ("http://ch:8123/analytics", "analytics", False),
        ("https://user:pw@ch:8443/", "usermetrics", False),
        ("http://ch:8123", "usermetrics", False),
    ],
)
def test_the_database_named_in_the_url_wins(url: str | None, database: str, embedded: bool) -> None:
    s = Settings(CLICKHOUSE_URL=url, CLICKHOUSE_DATABASE="usermetrics", DATA_DIR="/tmp/x")  # noqa: S108
    assert s.clickhouse_db == database and s.clickhouse_embedded is embedded
    if not embedded:
        assert "/analytics" not in s.clickhouse_server_dsn


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)", ClickHouseUnavailable),
        ("Code: 241. DB::Exception: Memory limit exceeded. (MEMORY_LIMIT_EXCEEDED)", ClickHouseUnavailable),
        ("Code: 469. DB::Exception: Constraint violated. (VIOLATED_CONSTRAINT)", ClickHouseRejected),
        ("Code: 27. DB::Exception: Cannot parse input. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)", ClickHouseRejected),
        ("Code: 99999. DB::Exception: something new", ClickHouseUnavailable),
    ],
)
def test_clickhouse_errors_are_typed_by_code(text: str, kind: type[Exception]) -> None:
    assert isinstance(translate_clickhouse(Exception(text)), kind)


@pytest.mark.parametrize(
    ("body", "bad"),
    [
        ([[], {"follower_id": 1}, {}], False),
        ([[], {}, None], False),
        ([1], True),
        ({"follower_id": 1}, True),
        ([None, None, {}], True),
        ([[], [1, 2], {}], True),
        ([[], {}, "callbacks"], True),
    ],
)
def test_message_bodies_must_be_the_task_triple(body: object, bad: bool) -> None:
    assert (body_problem(body) is not None) is bad


def test_message_headers_must_name_a_task_and_an_id() -> None:
    assert headers_problem({"task": "record_follow", "id": "x"}) is None
    assert headers_problem({"id": "x"}) is not None
    assert headers_problem({"task": "record_follow"}) is not None
    assert headers_problem("not a dict") is not None


def test_each_queue_accepts_only_its_tasks() -> None:
    from app.stores.broker import client_config

    allowed = queue_tasks(client_config(Settings(DATA_DIR="/tmp/x"))["task_routes"])  # noqa: S108
    assert set(c.EVENT_TASKS) <= allowed[c.EVENTS_QUEUE]
    assert (
        c.RECOMPUTE_ENGAGEMENT in allowed[c.MAINTENANCE_QUEUE] and c.RECOMPUTE_ENGAGEMENT not in allowed[c.EVENTS_QUEUE]
    )
    assert set(c.READ_TASKS) <= allowed[c.READS_QUEUE]


def test_a_redis_cluster_cache_needs_its_own_broker_and_sends_results_over_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError as SettingsError

    from app.stores.broker import client_config

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)

    with pytest.raises(SettingsError, match="set CELERY_BROKER_URL too"):
        Settings(REDIS_URL="redis+cluster://127.0.0.1:7000")
    amqp = Settings(REDIS_URL="redis+cluster://127.0.0.1:7000", CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1//")
    assert client_config(amqp)["result_backend"] == "rpc://"
    other = Settings(REDIS_URL="redis+cluster://127.0.0.1:7000", CELERY_BROKER_URL="redis://127.0.0.1:6380/1")
    assert client_config(other)["result_backend"] == "redis://127.0.0.1:6380/1"
    plain = Settings(REDIS_URL="redis://127.0.0.1:6379/0")
    assert client_config(plain)["result_backend"] == "redis://127.0.0.1:6379/0"
