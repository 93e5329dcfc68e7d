"""The answers of the read tasks, as plain functions of the process's runtime: the Celery tasks of ``tasks.reads``
and the read channel's server (``app.stores.read_channel``) both answer with them, the same JSON either way."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.core import constants as c
from app.core.errors import ValidationError
from app.core.ids import check_id, check_ids
from app.insights.requests import InsightRequest
from app.insights.service import compute_insight
from app.read.history import metric_history
from app.read.metrics_miss import user_metrics
from app.read.reactions_miss import complete_reactions, current_reactions
from app.read.reactions_service import states_to_json
from app.stores import runtime


def user_metrics_answer(user_ids: list[int], as_of: str | None = None) -> dict[str, Any]:
    ids = check_ids(user_ids, "user id")
    rt = runtime.get()
    when = datetime.fromisoformat(as_of) if as_of else None
    computed = user_metrics(rt, ids, when)
    return {str(uid): m.to_hash() for uid, m in computed.items()}


def reactions_answer(user_id: int, image_ids: list[int]) -> dict[str, list[list[Any]]]:
    user, images = check_id(user_id, "user id"), check_ids(image_ids, "image id")
    states = current_reactions(runtime.get(), user, images)
    return states_to_json(states)


def all_reactions_answer(user_id: int, max_images: int) -> dict[str, list[Any]] | None:
    user = check_id(user_id, "user id")
    if (
        not isinstance(max_images, int)
        or isinstance(max_images, bool)
        or not 0 < max_images <= c.REACTIONS_COMPLETE_LIMIT
    ):
        raise ValidationError(f"max_images must be an integer in 1..{c.REACTIONS_COMPLETE_LIMIT}, got {max_images!r}")
    every = complete_reactions(runtime.get(), user, max_images)
    return None if every is None else every.to_json()


def history_answer(user_id: int, metric: str, start: str, end: str, interval: str = "day") -> list[dict[str, Any]]:
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


def insight_answer(request: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise ValidationError("an insight request is a JSON object")
    return compute_insight(runtime.get(), InsightRequest.from_json(request))


# The reads of the read channel: the same answers as the tasks', without Celery.
CHANNEL_HANDLERS: dict[str, Callable[..., Any]] = {
    c.QUERY_USER_METRICS: user_metrics_answer,
    c.QUERY_REACTIONS: reactions_answer,
    c.QUERY_ALL_REACTIONS: all_reactions_answer,
    c.QUERY_HISTORY: history_answer,
    c.QUERY_INSIGHT: insight_answer,
}
