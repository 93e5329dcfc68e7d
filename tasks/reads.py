"""Read tasks: let other processes reach ClickHouse through the worker that owns it (embedded mode)."""

from __future__ import annotations

from typing import Any

from app.core import constants as c
from app.core.ids import check_ids
from app.read.answers import (
    all_reactions_answer,
    history_answer,
    insight_answer,
    reactions_answer,
    user_metrics_answer,
)
from app.stores import migrations, runtime
from app.stores.locks import redis_lock
from app.write.excluded import list_excluded, set_excluded
from tasks.base import project_task


@project_task(c.QUERY_USER_METRICS, ignore_result=False, max_retries=0, time_limit_s=30)
def query_user_metrics(self: Any, user_ids: list[int], as_of: str | None = None) -> dict[str, Any]:
    """Compute metrics from ClickHouse (no cache) and return them as ``{userId: hash fields}``."""
    return user_metrics_answer(user_ids, as_of)


@project_task(c.QUERY_REACTIONS, ignore_result=False, max_retries=0, time_limit_s=30)
def query_reactions(self: Any, user_id: int, image_ids: list[int]) -> dict[str, list[list[Any]]]:
    """Latest reaction bits of a user on images, from ClickHouse (the reactions snapshot where it is exact):
    ``{imageId: [[bit, on, version], ...]}``."""
    return reactions_answer(user_id, image_ids)


@project_task(c.QUERY_ALL_REACTIONS, ignore_result=False, max_retries=0, time_limit_s=30)
def query_all_reactions(self: Any, user_id: int, max_images: int) -> dict[str, list[Any]] | None:
    """Every image a user has a reaction event on: ``{"images": [...], "flags": [...], "states": [...]}``
    (``ReactionSet``), the states as a fill writes them; None for more than ``max_images``."""
    return all_reactions_answer(user_id, max_images)


@project_task(c.QUERY_HISTORY, ignore_result=False, max_retries=0, time_limit_s=30)
def query_metric_history(
    self: Any, user_id: int, metric: str, start: str, end: str, interval: str = "day"
) -> list[dict[str, Any]]:
    """A user's metric over time, from ClickHouse: ``[{"at": ..., "value": ...}, ...]``."""
    return history_answer(user_id, metric, start, end, interval)


@project_task(c.QUERY_INSIGHT, ignore_result=False, max_retries=0, time_limit_s=30)
def query_insight(self: Any, request: dict[str, Any]) -> dict[str, Any]:
    """A creator insight computed from ClickHouse (``app.insights``): the JSON answer of ``insights ...``."""
    return insight_answer(request)


@project_task(c.MANAGE_EXCLUDED_USERS, ignore_result=False, max_retries=0, time_limit_s=60)
def manage_excluded_users(
    self: Any, action: str, user_ids: list[int] | None = None, reason: str = ""
) -> list[dict[str, Any]]:
    """``add`` / ``remove`` users on the excluded list, or ``list`` it; returns the list after the change."""
    ids = check_ids(user_ids or [], "user id")
    rt = runtime.get()
    if action in ("add", "remove"):
        set_excluded(rt, ids, excluded=action == "add", reason=reason)
    return [u.to_json() for u in list_excluded(rt.clickhouse)]


@project_task(c.APPLY_MIGRATIONS, ignore_result=False, max_retries=0, time_limit_s=300)
def apply_migrations(self: Any) -> list[int]:
    rt = runtime.get()
    with redis_lock(rt.redis, "migrate", timeout_s=300):
        return migrations.migrate(rt.clickhouse)
