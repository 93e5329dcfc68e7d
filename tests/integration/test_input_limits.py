"""Hostile input at every door: ids out of the Int64 range, the nil event id, numeric times past any datetime,
non-finite floats in ``--json`` output. Real Redis, the real ClickHouse engine and a real worker; nothing mocked."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest

from app.caches.metrics_cache import metrics_key
from app.caches.reactions_cache import flags_key
from app.core import constants as c
from app.core.errors import PermanentError, ValidationError
from app.core.events import Event, MetricType
from app.core.ids import MAX_ID, check_id, check_ids
from app.core.payloads import PAYLOADS
from app.ops import schemas
from app.read.metrics_service import UserMetricsQueryService
from app.read.reactions_service import UserReactionCacheService, UserReactionQueryService, latest_reactions
from app.stores.clickhouse import insert_events
from app.stores.runtime import Runtime
from app.write import deadletters, ingest
from app.write.excluded import list_excluded

WRAPS_TO_913 = 2**64 + 913  # 18446744073709552529: read as user 913 by an Int64 parameter
RANGE = "1 to 2**63-1"
CACHE_KEYS = ("reactions:*", "user:metrics:*", "lock:fill:*", c.RECENT_READS_KEY, c.COUNTER_KEY)
NIL = "00000000-0000-0000-0000-000000000000"
NOW = datetime.now(UTC)


def reaction_of_913() -> Event:
    return Event(uuid.uuid4(), "Image", 1, 913, 9, MetricType.REACTION_HEART, 1, NOW)


def strict_json(text: str) -> Any:
    """Parse as a JSON parser other than Python's would: NaN, Infinity and -Infinity are not JSON."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@dataclass
class Run:
    exit_code: int
    out: str
    err: str


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """``python -m app ARGS`` in this process, keeping stderr (where refusals go) apart from stdout."""
    import typer

    from app.cli import cli as app_cli

    def invoke(*args: str) -> Run:
        capsys.readouterr()
        try:
            code = typer.main.get_command(app_cli).main(
                args=list(args), prog_name="python -m app", standalone_mode=False
            )
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        return Run(int(code or 0), captured.out, captured.err)

    return invoke


# 1. Ids out of range -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("good", [1, 913, MAX_ID])
def test_check_ids_accepts_the_int64_range(good: int) -> None:
    assert check_id(good) == good and check_ids([good, good], "user id") == [good, good]


@pytest.mark.parametrize("bad", [0, -1, MAX_ID + 1, WRAPS_TO_913, -(2**63), 10**400, True, 2.0, "5", None])
def test_check_ids_refuses_everything_else_naming_the_id_and_the_range(bad: Any) -> None:
    with pytest.raises(ValidationError, match=r"user id .* is out of range: ids are integers from 1 to 2\*\*63-1"):
        check_ids([5, bad], "user id")
    assert issubclass(ValidationError, PermanentError)


def test_payloads_and_the_check_share_one_range() -> None:
    ok = ingest.parse(c.RECORD_FOLLOW, {"follower_id": MAX_ID, "user_id": 1})
    assert ok.follower_id == MAX_ID  # type: ignore[attr-defined]
    for bad in (0, MAX_ID + 1, WRAPS_TO_913):
        with pytest.raises(ValidationError, match="follower_id"):
            ingest.parse(c.RECORD_FOLLOW, {"follower_id": bad, "user_id": 1})


def _metrics_calls(rt: Runtime) -> list[Callable[[], Any]]:
    service = UserMetricsQueryService(rt)
    start = NOW - timedelta(days=2)
    return [
        lambda: service.get_user_metrics([913, WRAPS_TO_913]),
        lambda: service.get_user_metrics([913], as_of=NOW),  # fine
        lambda: service.get_user_follower_count(WRAPS_TO_913),
        lambda: service.get_user_rank(0),
        lambda: service.calculate_engagement_score(-913),
        lambda: service.get_user_metric_history(WRAPS_TO_913, "followerCount", start),
    ]


def _reaction_calls(rt: Runtime) -> list[Callable[[], Any]]:
    def source(user_id: int, image_ids: Any) -> Any:
        return latest_reactions(rt.clickhouse, user_id, image_ids)

    query = UserReactionQueryService(rt.redis, source)
    cache = UserReactionCacheService(rt.redis)
    return [
        lambda: query.get_user_reactions(WRAPS_TO_913, [1]),
        lambda: query.get_user_reactions(913, [1, 2**63]),
        lambda: cache.get_user_reactions(WRAPS_TO_913, [1]),
        lambda: cache.get_user_reactions(913, [0]),
        lambda: cache.set_reaction(WRAPS_TO_913, 1, 2),
        lambda: cache.set_reaction(913, 2**64 + 1, 2),
        lambda: cache.clear_reaction(WRAPS_TO_913, 1),
        lambda: cache.populate_from_clickhouse(WRAPS_TO_913, [1], source),
        lambda: cache.populate_from_clickhouse(913, [-1], source),
    ]


def test_services_refuse_ids_out_of_range_before_touching_a_store(clean: Runtime) -> None:
    insert_events(clean.clickhouse, [reaction_of_913()])
    calls = _metrics_calls(clean)
    calls.pop(1)()  # an in-range call works (and writes nothing to the cache: as_of reads history)
    for call in calls + _reaction_calls(clean):
        with pytest.raises(
            ValidationError, match=rf"id -?\d+ is out of range: ids are integers from {re.escape(RANGE)}"
        ):
            call()
    # No cache was read (a read is counted and noted) or written, under any user's key.
    assert _cache_keys(clean) == []


def _cache_keys(rt: Runtime) -> list[str]:
    return sorted(k for pattern in CACHE_KEYS for k in rt.redis.keys(pattern))


def test_reactions_of_a_wrapped_id_are_not_user_913s(clean: Runtime) -> None:
    insert_events(clean.clickhouse, [reaction_of_913()])
    query = UserReactionQueryService(clean.redis, lambda u, imgs: latest_reactions(clean.clickhouse, u, imgs))
    assert query.get_user_reactions(913, [1]) == {1: 2}
    with pytest.raises(ValidationError, match=str(WRAPS_TO_913)):
        query.get_user_reactions(WRAPS_TO_913, [1])
    assert not clean.redis.exists(flags_key(WRAPS_TO_913))


CLI_BAD_IDS = [
    ("reactions", str(WRAPS_TO_913), "1"),
    ("reactions", "913", "1", str(2**63)),
    ("user-metrics", str(2**64 + 2)),
    ("user-metrics", "1", "0", "--json"),
    ("history", str(2**63), "followerCount", "--since", "2026-01-01"),
    ("excluded-users", "add", str(WRAPS_TO_913), "--reason", "x"),
    ("excluded-users", "remove", "0"),
    ("compare", "--users", "1", "--users", str(2**63)),
]


@pytest.mark.parametrize("argv", CLI_BAD_IDS, ids=lambda a: " ".join(a))
def test_cli_refuses_ids_out_of_range_with_one_line_and_exit_2(
    clean: Runtime, cli: Callable[..., Run], argv: tuple[str, ...]
) -> None:
    insert_events(clean.clickhouse, [reaction_of_913()])
    run = cli(*argv)
    assert run.exit_code == 2, run
    assert run.out == ""
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    assert "out of range: ids are integers from 1 to 2**63-1 (9223372036854775807)" in lines[0]
    bad = next(a for a in argv if a.isdigit() and not 1 <= int(a) <= MAX_ID)
    assert f"id {bad} " in lines[0]
    # Refused before anything ran: no dead letter of a read task, no cache key, nobody excluded.
    assert deadletters.count(clean.redis) == 0
    assert _cache_keys(clean) == []
    assert list_excluded(clean.clickhouse) == []


READ_TASKS_BAD_IDS = [
    (c.QUERY_USER_METRICS, {"user_ids": [2, 2**64 + 2]}, str(2**64 + 2)),
    (c.QUERY_REACTIONS, {"user_id": WRAPS_TO_913, "image_ids": [1]}, str(WRAPS_TO_913)),
    (c.QUERY_REACTIONS, {"user_id": 913, "image_ids": [1, 0]}, "0"),
    (c.QUERY_ALL_REACTIONS, {"user_id": WRAPS_TO_913, "max_images": 10}, str(WRAPS_TO_913)),
    (
        c.QUERY_HISTORY,
        {"user_id": -913, "metric": "followerCount", "start": "2026-01-01T00:00:00+00:00", "end": NOW.isoformat()},
        "-913",
    ),
    (c.MANAGE_EXCLUDED_USERS, {"action": "add", "user_ids": [WRAPS_TO_913], "reason": "x"}, str(WRAPS_TO_913)),
]


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(("task", "kwargs", "bad"), READ_TASKS_BAD_IDS, ids=lambda v: v if isinstance(v, str) else "")
def test_read_tasks_fail_permanently_on_ids_out_of_range(
    clean: Runtime, celery_app: Any, task: str, kwargs: dict[str, Any], bad: str
) -> None:
    insert_events(clean.clickhouse, [reaction_of_913()])
    result = celery_app.send_task(task, kwargs=kwargs, queue=c.READS_QUEUE)
    result.get(timeout=30, propagate=False)
    assert result.failed()
    assert f"id {bad} is out of range: ids are integers from {RANGE}" in str(result.result)
    letters = _wait_letters(clean)
    assert [(d.task, d.error) for d in letters] == [(task, "ValidationError")]
    assert letters[0].reason.startswith(("user id", "image id")) and "gave up" not in letters[0].reason
    assert list_excluded(clean.clickhouse) == []


def _wait_letters(rt: Runtime, timeout_s: float = 10) -> list[deadletters.DeadLetter]:
    deadline = time.monotonic() + timeout_s
    while not deadletters.count(rt.redis) and time.monotonic() < deadline:
        time.sleep(0.02)
    return deadletters.list_letters(rt.redis)


# 2. The nil event id ---------------------------------------------------------------------------------------------

NIL_PAYLOADS = {
    c.RECORD_FOLLOW: {"follower_id": 1, "user_id": 2, "event_id": NIL},
    c.RECORD_UPLOAD: {"user_id": 1, "content_type": "Post", "entity_id": 9, "event_id": NIL},
    c.SET_REACTION: {"user_id": 1, "image_id": 3, "reactions": 5, "event_id": NIL},
    c.RECORD_ENTITY_METRIC: {
        "entity_type": "Model",
        "entity_id": 4,
        "metric_type": "Download",
        "user_id": 1,
        "event_id": NIL,
    },
    c.RECORD_EVENTS: {"events": [{"type": "record_follow", "follower_id": 1, "user_id": 2}], "event_id": NIL},
}
NIL_ITEMS = [
    {"type": "record_follow", "follower_id": 1, "user_id": 2, "event_id": NIL},
    {"type": "record_upload", "user_id": 1, "content_type": "Image", "entity_id": 9, "event_id": NIL.replace("-", "")},
    {"type": "set_reaction", "user_id": 1, "image_id": 3, "reactions": 1, "event_id": NIL},
    {
        "type": "record_entity_metric",
        "entity_type": "Post",
        "entity_id": 4,
        "metric_type": "View",
        "user_id": 1,
        "event_id": NIL,
    },
]


@pytest.mark.parametrize("task", list(NIL_PAYLOADS))
def test_nil_event_id_is_refused_by_model_and_schema(task: str) -> None:
    with pytest.raises(ValidationError, match=f"event_id: .*must not be the nil UUID {NIL}"):
        ingest.parse(task, NIL_PAYLOADS[task])
    validator = jsonschema.Draft202012Validator(json.loads(schemas.render(task)))
    assert not validator.is_valid(NIL_PAYLOADS[task])
    assert validator.is_valid({**NIL_PAYLOADS[task], "event_id": str(uuid.uuid4())})
    PAYLOADS[task].model_validate({**NIL_PAYLOADS[task], "event_id": str(uuid.uuid4())})


@pytest.mark.parametrize("item", NIL_ITEMS, ids=lambda i: str(i["type"]))
def test_nil_event_id_is_refused_in_record_events_items(item: dict[str, Any], producer: Any) -> None:
    good = {"type": "record_follow", "follower_id": 3, "user_id": 4, "event_id": str(uuid.uuid4())}
    with pytest.raises(ValidationError, match=r"events\.1\..*event_id: .*nil UUID"):
        ingest.parse(c.RECORD_EVENTS, {"events": [good, item]})
    with pytest.raises(ValidationError, match="nil UUID"):
        producer.record_events([good, item])


def test_producer_refuses_the_nil_event_id(producer: Any) -> None:
    with pytest.raises(ValidationError, match="nil UUID"):
        producer.send(c.RECORD_FOLLOW, follower_id=1, user_id=2, event_id=uuid.UUID(int=0))


# 3. Numeric occurred_at past any datetime -----------------------------------------------------------------------

HUGE_TIMES = [1e300, float("inf"), float("-inf"), float("nan"), 10**20, 10**400, -1, 2**63]


@pytest.mark.parametrize("when", HUGE_TIMES, ids=lambda v: f"{v:.3g}" if isinstance(v, float) else f"int{len(str(v))}")
def test_numeric_occurred_at_out_of_range_is_a_validation_error(when: Any, producer: Any) -> None:
    follow = {"follower_id": 1, "user_id": 2, "occurred_at": when}
    with pytest.raises(ValidationError, match=r"^record_follow: occurred_at: .*out of range"):
        ingest.parse(c.RECORD_FOLLOW, follow)
    batch = {"events": [{"type": "record_follow", **follow}]}
    with pytest.raises(ValidationError, match=r"events\.0\.record_follow\.occurred_at: .*out of range"):
        ingest.parse(c.RECORD_EVENTS, batch)
    with pytest.raises(ValidationError, match="occurred_at: .*out of range"):
        producer.send(c.RECORD_FOLLOW, follower_id=1, user_id=2, occurred_at=when)


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_rfc3339_times_past_the_datetime_range_are_a_validation_error(text: str) -> None:
    with pytest.raises(ValidationError, match="occurred_at: .*out of range"):
        ingest.parse(c.RECORD_FOLLOW, {"follower_id": 1, "user_id": 2, "occurred_at": text})


def test_numeric_occurred_at_in_range_still_works() -> None:
    ms = int((NOW - timedelta(days=1)).timestamp() * 1000)
    for value in (ms, float(ms)):
        got = ingest.parse(c.RECORD_FOLLOW, {"follower_id": 1, "user_id": 2, "occurred_at": value}).occurred_at
        assert got is not None and abs(got.timestamp() * 1000 - ms) < 1


# 4. Strict JSON output -------------------------------------------------------------------------------------------


@pytest.fixture()
def hostile_letter(clean: Runtime, celery_app: Any, worker: Any) -> Iterator[None]:
    """A raw producer sends non-finite floats (Python's json writes and reads NaN and Infinity)."""
    kwargs = {"follower_id": float("nan"), "user_id": 2, "extra": [float("inf"), {"deep": float("-inf")}]}
    celery_app.send_task(c.RECORD_FOLLOW, kwargs=kwargs, queue=c.EVENTS_QUEUE)
    assert _wait_letters(clean), "the hostile message was not dead-lettered"
    yield


@pytest.mark.usefixtures("hostile_letter")
def test_dead_letters_list_json_is_strict_json(cli: Callable[..., Run]) -> None:
    run = cli("dead-letters", "list", "--json")
    assert run.exit_code == 0, run
    listed = strict_json(run.out)
    assert listed["total"] == 1
    assert listed["letters"][0]["kwargs"] == {"follower_id": "nan", "user_id": 2, "extra": ["inf", {"deep": "-inf"}]}
    table = cli("dead-letters", "list")
    assert table.exit_code == 0 and "follower_id" in table.out


def test_user_metrics_json_is_strict_json_for_a_corrupt_cached_hash(clean: Runtime, cli: Callable[..., Run]) -> None:
    clean.redis.hset(metrics_key(5), mapping={"followerCount": "3", "engagementScore": "NaN"})
    clean.redis.hset(metrics_key(6), mapping={"followerCount": "1", "engagementScore": "-Infinity"})
    run = cli("user-metrics", "5", "6", "--json")
    assert run.exit_code == 0, run
    got = strict_json(run.out)
    assert (got["5"]["followerCount"], got["5"]["engagementScore"]) == (3, "nan")
    assert got["6"]["engagementScore"] == "-inf"
