"""The insights' histories: reads take them where they are current, and the log where they are not.

Given a creator's follows and reactions and a run of the histories job, when the log's rows are taken away (a way
to see where an answer comes from), then growth and audience still answer from the history tables; a key that
changes after the run is read from the log; and once a table loses its cut, reads take the log alone.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from app.core.events import Event, MetricType
from app.derived import changelog
from app.insights.service import UserInsightsService
from app.jobs.insight_histories import update_insight_histories
from app.stores.clickhouse import ClickHouse, insert_events
from app.stores.runtime import Runtime

CREATOR, DAY = 7, date(2026, 3, 10)
T = datetime(2026, 3, 10, 12, tzinfo=UTC)


def event(entity_type: str, entity: int, actor: int, metric: str, value: int, at: datetime) -> Event:
    return Event(uuid.uuid4(), entity_type, entity, actor, CREATOR, MetricType(metric), value, at)


def truncate(ch: ClickHouse, table: str) -> None:
    """Empty ``table`` (on every node of a cluster)."""
    for node in ch.nodes():
        try:
            node.command(f"TRUNCATE TABLE {table}{'_local' if ch.cluster else ''}")
        finally:
            if node is not ch:
                node.close()


def read(rt: Runtime) -> tuple[list[int], dict[str, int]]:
    service = UserInsightsService(rt)
    growth = service.growth(CREATOR, DAY, DAY + timedelta(days=1), as_of=T + timedelta(days=2))
    audience = service.audience(CREATOR, DAY, DAY, as_of=T + timedelta(days=2))
    return [d["followers"] for d in growth["days"]], audience["reactions"]


def test_reads_take_the_histories_then_the_log_for_what_changed_after_them(clean: Runtime) -> None:
    ch = clean.clickhouse
    insert_events(
        ch,
        [
            event("User", CREATOR, 1, "Follow", 1, T),
            event("User", CREATOR, 2, "Follow", 1, T + timedelta(hours=1)),
            event("Image", 100, 3, "ReactionLike", 1, T),
            event("Image", 100, 1, "ReactionLike", 1, T + timedelta(hours=2)),
        ],
    )
    assert read(clean) == ([2, 2], {"followers": 1, "nonFollowers": 1})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(changelog, "INFLIGHT_MARGIN", timedelta(0))
        assert update_insight_histories(clean).mode == "full"

    # The log's rows gone, the answers stand: they come from the histories
    for table in ("entityMetricEvents", "eventArrivals"):
        truncate(ch, table)
    assert read(clean) == ([2, 2], {"followers": 1, "nonFollowers": 1})

    # A follow that changes after the run is read from the log (which now holds only that new event): follower 2's
    # table row is left out, and the log has their unfollow alone
    insert_events(ch, [event("User", CREATOR, 2, "Follow", 0, T + timedelta(hours=3))])
    assert read(clean) == ([1, 1], {"followers": 1, "nonFollowers": 1})

    # Without a cut, the log alone (one unfollow: nobody follows)
    truncate(ch, "insightCuts")
    assert read(clean) == ([0, 0], {"followers": 0, "nonFollowers": 0})
