"""Migration from the legacy database: backfill, comparison, dual read, dual write, archive.

Real PostgreSQL when ``DATABASE_URL`` is set (the legacy tables are created in that database and dropped after),
SQLite under the test data dir otherwise; the real ClickHouse engine and real Redis.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, update

from app.caches.metrics_cache import metrics_key
from app.client import after_commit
from app.core.events import Event, MetricType
from app.core.settings import load_settings
from app.derived.metrics_from_log import compute_user_metrics
from app.legacy import db
from app.legacy.baseline import legacy_user_metrics
from app.legacy.models import ImageReaction, Model, ReviewReactions, User, UserEngagement
from app.migration import archive
from app.migration.backfill import backfill, reset_checkpoints
from app.migration.compare import compare
from app.migration.seed import LegacySpec, seed
from app.read.dual import wait_for_comparisons
from app.read.metrics_service import UserMetricsQueryService
from app.read.reactions_service import latest_reactions
from app.stores.clickhouse import insert_events
from app.stores.runtime import Runtime
from tests.stack import wipe_clickhouse

# A follow by an active user (not deleted, not banned), so that it counts on both sides.
ACTIVE_FOLLOW = (
    select(UserEngagement.userId, UserEngagement.targetUserId)
    .join(User, User.id == UserEngagement.userId)
    .where(
        UserEngagement.type == "Follow",
        UserEngagement.userId != UserEngagement.targetUserId,
        User.deletedAt.is_(None),
        User.bannedAt.is_(None),
    )
    .order_by(UserEngagement.userId, UserEngagement.targetUserId)
    .limit(1)
)
SPEC = LegacySpec(users=150, follows_per_user=6, images_per_user=2, reactions_per_user=10)


@pytest.fixture()
def legacy(clean: Runtime) -> Iterator[Engine]:
    eng = db.engine(load_settings())
    db.drop_schema(eng)
    db.create_schema(eng)
    seed(eng, SPEC)
    reset_checkpoints(clean.clickhouse)
    yield eng
    db.drop_schema(eng)
    eng.dispose()


def snapshot(rt: Runtime, eng: Engine) -> tuple[Any, Any]:
    users = list(range(1, SPEC.users + 1))
    metrics = {
        u: m.to_json()
        for u, m in compute_user_metrics(rt.clickhouse, users, weights=rt.weights, window=rt.window).items()
    }
    with eng.connect() as conn:
        pairs = sorted({(int(u), int(i)) for u, i in conn.execute(select(ImageReaction.userId, ImageReaction.imageId))})
    flags = {}
    for u in sorted({u for u, _ in pairs}):
        images = [i for uu, i in pairs if uu == u]
        flags[u] = {
            i: sum(b.bit for b in bits if b.on) for i, bits in latest_reactions(rt.clickhouse, u, images).items()
        }
    return metrics, flags


EVENTS_DIGEST = (
    "SELECT metricType, count(), uniqExact(eventId), "
    "sum(cityHash64(eventId, entityType, entityId, userId, ownerId, metricValue, createdAt)) "
    "FROM entityMetricEvents GROUP BY metricType ORDER BY metricType"
)


@pytest.mark.parametrize("via", ["engine", "python"])
def test_backfill_is_resumable_and_idempotent_and_agrees_with_the_legacy_numbers(
    clean: Runtime, legacy: Engine, via: str
) -> None:
    # Given a backfill that "crashes" after two chunks, then resumes from its checkpoint
    first = backfill(clean, legacy, chunk=300, max_chunks=2, via=via)
    assert first.via == via
    if via == "python":
        assert sum(first.rows.values()) == 600
    else:  # key ranges of about 300 rows each
        assert 300 < sum(first.rows.values()) < 1000
    resumed = backfill(clean, legacy, chunk=300, via=via)
    assert resumed.resumed_from and sum(first.rows.values()) + sum(resumed.rows.values()) > 600
    after_crash = snapshot(clean, legacy)
    # When everything is backfilled again from the start
    reset_checkpoints(clean.clickhouse)
    again = backfill(clean, legacy, chunk=1000, via=via)
    assert sum(again.rows.values()) == sum(first.rows.values()) + sum(resumed.rows.values())
    # Then ClickHouse gives identical results, equal to the legacy aggregation
    assert snapshot(clean, legacy) == after_crash
    legacy_numbers = legacy_user_metrics(legacy, range(1, SPEC.users + 1))
    metrics = after_crash[0]
    for u, expected in legacy_numbers.items():
        for field, value in expected.items():
            assert metrics[u][field] == value, (u, field)
    report = compare(clean, legacy, seed=1)
    assert report.unexplained == 0 and report.reaction_pairs > 0
    assert all(m.mismatches == 0 for m in report.metrics.values())


def test_engine_and_python_backfills_write_the_same_events(clean: Runtime, legacy: Engine) -> None:
    # The engine derives event ids, owners and timestamps in SQL; the Python path with uuid5 and the driver.
    with legacy.begin() as conn:  # a removed model: two events on both paths
        created = conn.execute(select(Model.createdAt).where(Model.id == 1)).scalar_one()
        conn.execute(update(Model).where(Model.id == 1).values(deletedAt=created + timedelta(days=1, microseconds=7)))
    engine = backfill(clean, legacy, via="engine")
    by_engine = clean.clickhouse.rows(EVENTS_DIGEST)
    wipe_clickhouse(clean)
    python = backfill(clean, legacy, via="python")
    assert engine.via == "engine" and python.via == "python"
    assert engine.rows == python.rows and engine.events == python.events
    assert clean.clickhouse.rows(EVENTS_DIGEST) == by_engine


def test_compare_finds_every_planted_mismatch(clean: Runtime, legacy: Engine, run_cli: Any, tmp_path: Any) -> None:
    backfill(clean, legacy)
    with legacy.begin() as conn:
        # 1. a follow the legacy side lost (or ClickHouse invented): followerCount differs, unexplained
        follower, target = conn.execute(ACTIVE_FOLLOW).first()  # type: ignore[misc]
        conn.execute(
            delete(UserEngagement).where(UserEngagement.userId == follower, UserEngagement.targetUserId == target)
        )
        # 2. a user whose rows were never backfilled: missing events
        now = datetime.now(UTC)
        conn.execute(insert(User), [{"id": 9001, "username": "late", "createdAt": now}])
        conn.execute(insert(UserEngagement), [{"userId": 1, "targetUserId": 9001, "type": "Follow", "createdAt": now}])
    # 3. a reaction only ClickHouse has
    reactor, image = 2, 1
    insert_events(
        clean.clickhouse,
        [Event(uuid.uuid4(), "Image", image, reactor, 0, MetricType.REACTION_CRY, 1, datetime.now(UTC))],
    )
    with legacy.begin() as conn:
        conn.execute(
            insert(ImageReaction),
            [
                {
                    "imageId": image,
                    "userId": reactor,
                    "reaction": ReviewReactions.LIKE,
                    "createdAt": now,
                    "updatedAt": now,
                }
            ],
        )
    report = compare(clean, legacy, users=[target, 9001, reactor], reactions_sample=10_000)
    followers = report.metrics["followerCount"]
    assert followers.reasons == {"unexplained": 1, "missing events": 1}
    assert {e["userId"] for e in followers.examples} == {target, 9001}
    assert any(e["userId"] == reactor and e["imageId"] == image for e in report.reaction_examples)
    out = tmp_path / "report.json"
    result = run_cli("compare", "--users", str(target), "--users", "9001", "--report", str(out))
    assert result.exit_code == 1 and "unexplained mismatches" in result.output
    assert json.loads(out.read_text())["metrics"]["followerCount"]["mismatches"] == 2


def test_dual_read_serves_postgres_and_logs_a_planted_discrepancy(
    clean: Runtime, legacy: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    backfill(clean, legacy)
    with legacy.begin() as conn:
        follower, target = conn.execute(ACTIVE_FOLLOW).first()  # type: ignore[misc]
        conn.execute(
            delete(UserEngagement).where(UserEngagement.userId == follower, UserEngagement.targetUserId == target)
        )
    expected = legacy_user_metrics(legacy, [target])[target]["followerCount"]
    dual = Runtime(clean.settings.model_copy(update={"user_metrics_read_source": "dual"}), clickhouse=clean.clickhouse)
    with caplog.at_level(logging.WARNING, logger="app.read.dual"):
        got = UserMetricsQueryService(dual).get_user_metrics([target])
        wait_for_comparisons()
    assert got[target].follower_count == expected  # PostgreSQL is served
    assert int(clean.redis.hget("stats:counters", "dual_discrepancies_total") or 0) == 1, got[target]
    assert any(f"user {target} differs" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]
    assert int(clean.redis.hget("stats:counters", "dual_discrepancies_total") or 0) == 1
    postgres = Runtime(
        clean.settings.model_copy(update={"user_metrics_read_source": "postgres"}), clickhouse=clean.clickhouse
    )
    clean.redis.delete(metrics_key(target))
    assert UserMetricsQueryService(postgres).get_user_metrics([target])[target].follower_count == expected


def test_dual_write_sends_only_after_commit(legacy: Engine) -> None:
    from sqlalchemy.orm import Session

    sent: list[str] = []
    with Session(legacy) as session:
        after_commit(session, lambda: sent.append("follow 5 -> 6"))
        session.add(UserEngagement(userId=5, targetUserId=6, type="Follow", createdAt=datetime.now(UTC)))
        session.rollback()
        assert sent == []
        after_commit(session, lambda: sent.append("follow 5 -> 7"))
        session.add(UserEngagement(userId=5, targetUserId=7, type="Follow", createdAt=datetime.now(UTC)))
        session.commit()
    assert sent == ["follow 5 -> 7"]


def test_archive_refuses_while_a_reaction_is_missing_then_exports(
    clean: Runtime, legacy: Engine, run_cli: Any, tmp_path: Any
) -> None:
    backfill(clean, legacy)
    now = datetime.now(UTC)
    with legacy.begin() as conn:
        conn.execute(
            insert(ImageReaction),
            [{"imageId": 3, "userId": 140, "reaction": ReviewReactions.HEART, "createdAt": now, "updatedAt": now}],
        )
    check = archive.verify(clean, legacy)
    assert not check.ok and check.missing == 1 and check.missing_examples == [(140, 3, "ReactionHeart")]
    out = tmp_path / "reactions.parquet"
    refused = run_cli("archive-image-reactions", "--out", str(out))
    assert refused.exit_code == 1 and not out.exists()
    backfill(clean, legacy)  # resumes after its checkpoint: picks up the new row
    done = run_cli("archive-image-reactions", "--out", str(out))
    assert done.exit_code == 0 and out.exists() and 'DROP TABLE "ImageReaction"' in done.output
    import pyarrow.parquet as pq

    with legacy.connect() as conn:
        total = len(conn.execute(select(ImageReaction.id)).all())
    assert pq.read_table(out).num_rows == total  # nothing dropped without --confirm


def test_a_second_backfill_is_refused_while_one_runs_and_the_first_stays_exact(clean: Runtime, legacy: Engine) -> None:
    """Two backfills at once shared one owners table: the second's clean-up dropped it under the first, whose
    reactions then lost their owners. A failpoint starts the second while the first holds its owners."""
    from app.core import failpoints
    from app.core.errors import ValidationError

    refused: list[str] = []
    started: list[bool] = []

    def a_second_backfill_now() -> None:
        if started:  # once: the second backfill, if it ran, would reach this point too
            return
        started.append(True)
        try:
            backfill(clean, legacy, via="engine")
            refused.append("it ran")
        except ValidationError as exc:
            refused.append(str(exc))

    with failpoints.armed(failpoints.BACKFILL_OWNERS_LOADED, a_second_backfill_now):
        first = backfill(clean, legacy, via="engine")
    assert first.via == "engine"
    assert refused and "another backfill is running" in refused[0]
    report = compare(clean, legacy, seed=1)
    assert report.unexplained == 0 and report.reaction_pairs > 0
    assert all(m.mismatches == 0 for m in report.metrics.values())
    leftovers = clean.clickhouse.rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'backfillImageOwners%'"
    )
    assert leftovers == []


def _written(rt: Runtime) -> int:
    return int(rt.clickhouse.rows("SELECT uniqExact(eventId) FROM entityMetricEvents")[0][0])


def _remove_an_image_with_reactions(eng: Engine) -> int:
    """Delete one reacted image from under its reactions (as a legacy database without the constraint allows)."""
    from app.legacy.models import Image

    with eng.begin() as conn:
        image = int(conn.execute(select(ImageReaction.imageId).order_by(ImageReaction.id).limit(1)).scalar_one())
        if eng.url.get_backend_name() == "postgresql":
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")  # no foreign-key triggers
        conn.execute(delete(Image).where(Image.id == image))
    return image


@pytest.mark.parametrize("via", ["engine", "python"])
def test_the_events_a_backfill_reports_are_the_events_it_wrote(clean: Runtime, legacy: Engine, via: str) -> None:
    """A reaction on an image that no longer exists makes no event (no owner); the report must not count one."""
    _remove_an_image_with_reactions(legacy)
    report = backfill(clean, legacy, via=via)
    assert report.via == via
    assert report.events == _written(clean)


@pytest.mark.parametrize("via", ["engine", "python"])
def test_a_since_backfill_takes_the_removal_of_a_model_created_before_since(
    clean: Runtime, legacy: Engine, via: str
) -> None:
    since = datetime.now(UTC) - timedelta(hours=1)
    with legacy.begin() as conn:
        owner = int(conn.execute(select(Model.userId).where(Model.id == 1)).scalar_one())
        conn.execute(update(Model).where(Model.id == 1).values(createdAt=since - timedelta(days=30)))
    backfill(clean, legacy, via=via)
    before = compute_user_metrics(clean.clickhouse, [owner], weights=clean.weights, window=clean.window)[owner]
    with legacy.begin() as conn:
        conn.execute(update(Model).where(Model.id == 1).values(deletedAt=since + timedelta(minutes=5)))
    report = backfill(clean, legacy, since=since, via=via)
    assert report.via == via and report.rows.get("uploads:Model") == 1
    after = compute_user_metrics(clean.clickhouse, [owner], weights=clean.weights, window=clean.window)[owner]
    assert after.upload_count == before.upload_count - 1
    assert legacy_user_metrics(legacy, [owner])[owner]["uploadCount"] == after.upload_count


def test_the_engine_path_refuses_a_postgresql_time_zone_other_than_utc(clean: Runtime, legacy: Engine) -> None:
    """Europe/London is UTC in winter and an hour ahead in summer: a check of one winter row would pass while the
    engine read every summer timestamp an hour late. The setting itself is checked; the backfill falls back."""
    from app.core.errors import ValidationError
    from app.legacy.models import Image, Post

    if legacy.url.get_backend_name() != "postgresql":
        pytest.skip("PostgreSQL's TimeZone setting (set DATABASE_URL)")
    database = legacy.url.database
    with legacy.begin() as conn:  # the first row of every table (the one-row check) is a winter one
        for model in (UserEngagement, Model, Post, Image, ImageReaction):
            conn.execute(update(model).values(createdAt=datetime(2026, 1, 15, 12, tzinfo=UTC)))
        conn.execute(update(Model).where(Model.id == 2).values(createdAt=datetime(2026, 7, 15, 12, tzinfo=UTC)))
        conn.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET TimeZone = 'Europe/London'")
    legacy.dispose()  # new sessions take the database's setting
    try:
        with pytest.raises(ValidationError, match="TimeZone is 'Europe/London'"):
            backfill(clean, legacy, via="engine")
        report = backfill(clean, legacy)
        assert report.via == "python"
        at = clean.clickhouse.rows(
            "SELECT createdAt FROM entityMetricEvents WHERE entityType = 'Model' AND entityId = 2 AND metricValue = 1"
        )
        assert at and at[0][0].replace(tzinfo=UTC) == datetime(2026, 7, 15, 12, tzinfo=UTC)
    finally:
        with legacy.begin() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{database}" RESET TimeZone')
        legacy.dispose()
