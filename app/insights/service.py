"""``UserInsightsService``: every creator insight, as the web app and the CLI read it (JSON-shaped answers).

Growth, retention, audience and activity are computed from the log in ClickHouse at read time (fresh as soon as an
event is written); in embedded mode, while a worker owns the engine, they go through it (a read task). Peers and
achievements are read from what their jobs keep.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from app.core import constants as c
from app.insights import achievements, peers
from app.insights.requests import InsightRequest
from app.stores import clickhouse
from app.stores.broker import through_worker
from app.stores.runtime import Runtime


class UserInsightsService:
    """Creator insights of one user at a time; every method returns the JSON shape ``--json`` prints."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def growth(
        self, user_id: int, start: date, end: date, *, tz: str = "UTC", as_of: datetime | None = None
    ) -> dict[str, Any]:
        """Followers gained, lost and held at the end of each day from ``start`` to ``end`` (inclusive)."""
        return self._compute(InsightRequest.of("growth", user_id, start=start, end=end, tz=tz, as_of=as_of))

    def retention(
        self, user_id: int, *, weeks: int = 12, tz: str = "UTC", as_of: datetime | None = None
    ) -> dict[str, Any]:
        """Weekly follower cohorts of the ``weeks`` weeks ending with the week of ``as_of`` and who still follows."""
        return self._compute(InsightRequest.of("retention", user_id, weeks=weeks, tz=tz, as_of=as_of))

    def audience(
        self, user_id: int, start: date, end: date, *, tz: str = "UTC", as_of: datetime | None = None
    ) -> dict[str, Any]:
        """Reactions turned on and downloads on the user's entities in the range, by followers and by others."""
        return self._compute(InsightRequest.of("audience", user_id, start=start, end=end, tz=tz, as_of=as_of))

    def activity(
        self, user_id: int, *, days: int = 28, tz: str = "UTC", as_of: datetime | None = None
    ) -> dict[str, Any]:
        """Engagement received per weekday and hour over the last ``days`` days, and the three best hours."""
        return self._compute(InsightRequest.of("activity", user_id, days=days, tz=tz, as_of=as_of))

    def peers(self, user_id: int) -> dict[str, Any]:
        """The user's values and percentiles among creators, as of the last ``recompute_peers`` run."""
        return self._compute(InsightRequest.of("peers", user_id))

    def achievements(self, user_id: int) -> dict[str, Any]:
        """The badge tiers the user has earned, as of the last ``award_achievements`` run."""
        return self._compute(InsightRequest.of("achievements", user_id))

    def _compute(self, request: InsightRequest) -> dict[str, Any]:
        if request.kind == "peers":  # Redis alone: read here whatever owns the engine
            return peers.read_peers(self.rt, request.user_id)
        if not clickhouse.owner_is_elsewhere(self.rt.settings):
            return compute_insight(self.rt, request)
        answer: dict[str, Any] = through_worker(self.rt, c.QUERY_INSIGHT, request=request.to_json())
        return answer


def compute_insight(rt: Runtime, request: InsightRequest) -> dict[str, Any]:
    """The answer to ``request``, computed in this process (which can reach ClickHouse)."""
    from app.insights import follows, received

    if request.kind == "achievements":
        return achievements.read_achievements(rt, request.user_id)
    compute = {
        "growth": follows.growth,
        "retention": follows.retention,
        "audience": received.audience,
        "activity": received.activity,
    }[request.kind]
    return compute(rt.clickhouse, request)
