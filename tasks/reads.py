"""Read tasks: let other processes reach ClickHouse through the worker that owns it (embedded mode)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.core import constants as c
from app.core.errors import ValidationError
from app.core.ids import check_id, check_ids
from app.insights.requests import InsightRequest
from app.insights.service import compute_insight
from app.read.history import metric_history
from app.read.metrics_miss import user_metrics
from app.read.reactions_miss import current_reactions
from app.read.reactions_service import all_reactions
from app.stores import migrations, runtime
from app.stores.locks import redis_lock
from app.write.excluded import list_excluded, set_excluded
from tasks.base import project_task


@project_task(c.QUERY_USER_METRICS, ignore_result=False, max_retries=0, time_limit_s=30)
def query_user_metrics(self: Any, user_ids: list[int], as_of: str | None = None) -> dict[str, Any]:
    """Compute metrics from ClickHouse (no cache) and return them as ``{userId: hash fields}``."""
    ids = check_ids(user_ids, "user id")
    rt = runtime.get()
    when = datetime.fromisoformat(as_of) if as_of else None
    computed = user_metrics(rt, ids, when)
    return {str(uid): m.to_hash() for uid, m in computed.items()}


@project_task(c.QUERY_REACTIONS, ignore_result=False, max_retries=0, time_limit_s=30)
def query_reactions(self: Any, user_id: int, image_ids: list[int]) -> dict[str, list[list[Any]]]:
    """Latest reaction bits of a user on images, from ClickHouse (the reactions snapshot where it is exact):
    ``{imageId: [[bit, on, version], ...]}``."""
    user, images = check_id(user_id, "user id"), check_ids(image_ids, "image id")
    states = current_reactions(runtime.get(), user, images)
    return {str(image): [[u.bit, u.on, u.version] for u in bits] for image, bits in states.items()}


@project_task(c.QUERY_ALL_REACTIONS, ignore_result=False, max_retries=0, time_limit_s=30)
def query_all_reactions(self: Any, user_id: int, max_images: int) -> dict[str, list[list[Any]]] | None:
    """Every image a user has a reaction event on, as ``query_reactions`` answers; None for more than
    ``max_images``."""
    user = check_id(user_id, "user id")
    if (
        not isinstance(max_images, int)
        or isinstance(max_images, bool)
        or not 0 < max_images <= c.REACTIONS_COMPLETE_LIMIT
    ):
        raise ValidationError(f"max_images must be an integer in 1..{c.REACTIONS_COMPLETE_LIMIT}, got {max_images!r}")
    states = all_reactions(runtime.get().clickhouse, user, max_images)
    if states is None:
        return None
    return {str(image): [[u.bit, u.on, u.version] for u in bits] for image, bits in states.items()}


@project_task(c.QUERY_HISTORY, ignore_result=False, max_retries=0, time_limit_s=30)
def query_metric_history(
    self: Any, user_id: int, metric: str, start: str, end: str, interval: str = "day"
) -> list[dict[str, Any]]:
    """A user's metric over time, from ClickHouse: ``[{"at": ..., "value": ...}, ...]``."""
    user = check_id(user_id, "user id")
    points = metric_history(
        runtime.get().clickhouse,
        user,
        metric,
        datetime.fromisoformat(start),
        datetime.fromisoformat(end),
        interval,
    )
    return [p.to_json() for p in points]


@project_task(c.QUERY_INSIGHT, ignore_result=False, max_retries=0, time_limit_s=30)
def query_insight(self: Any, request: dict[str, Any]) -> dict[str, Any]:
    """A creator insight computed from ClickHouse (``app.insights``): the JSON answer of ``insights ...``."""
    if not isinstance(request, dict):
        raise ValidationError("an insight request is a JSON object")
    return compute_insight(runtime.get(), InsightRequest.from_json(request))


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
