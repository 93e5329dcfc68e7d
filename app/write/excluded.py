"""Excluded users (reaction farms, banned accounts): a managed list in ClickHouse; their actions count for nobody.

The list lives next to the events (table ``excludedUsers``, latest change per user wins) so every metric query
applies it inline, and it is durable like the events. A change marks the owners the user acted on as dirty, so
their cached metrics are recomputed by the refresher within a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.core import constants as c
from app.core.events import as_utc
from app.core.ids import check_ids
from app.stores import broker, clickhouse
from app.stores.clickhouse import ClickHouse
from app.stores.runtime import Runtime
from app.write.refresher import mark_dirty

_AFFECTED_SQL = """
SELECT DISTINCT ownerId FROM entityMetricEvents
WHERE userId IN {users:Array(Int64)} AND ownerId != 0 AND ownerId NOT IN {users:Array(Int64)}
"""


@dataclass(frozen=True)
class ExcludedUser:
    user_id: int
    reason: str
    since: datetime

    def to_json(self) -> dict[str, Any]:
        return {"userId": self.user_id, "reason": self.reason, "since": self.since.isoformat()}


def list_excluded(ch: ClickHouse) -> list[ExcludedUser]:
    rows = ch.rows("SELECT userId, reason, changedAt FROM excludedUsers FINAL WHERE excluded = 1 ORDER BY userId")
    return [ExcludedUser(int(u), str(r), as_utc(at)) for u, r, at in rows]


def set_excluded(rt: Runtime, user_ids: Iterable[int], excluded: bool, reason: str = "") -> int:
    """Add users to the list (or take them off); returns how many cached owners were marked for a recompute."""
    users = sorted(set(check_ids(user_ids, "user id")))
    if not users:
        return 0
    now = datetime.now(UTC)
    rt.clickhouse.insert(
        "excludedUsers",
        [(u, int(excluded), reason, now) for u in users],
        ["userId", "excluded", "reason", "changedAt"],
    )
    owners = [int(o) for (o,) in rt.clickhouse.rows(_AFFECTED_SQL, {"users": users})]
    return mark_dirty(rt.redis, owners)


def manage(rt: Runtime, action: str, user_ids: list[int], reason: str = "") -> list[dict[str, Any]]:
    """``add``, ``remove`` or ``list`` excluded users, here or through the worker that owns the embedded engine;
    returns the list after the change."""
    if clickhouse.owner_is_elsewhere(rt.settings):
        entries: list[dict[str, Any]] = broker.through_worker(
            rt, c.MANAGE_EXCLUDED_USERS, action=action, user_ids=user_ids, reason=reason
        )
        return entries
    if action != "list":
        set_excluded(rt, user_ids, excluded=action == "add", reason=reason)
    return [e.to_json() for e in list_excluded(rt.clickhouse)]
