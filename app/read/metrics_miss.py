"""Current metrics on a cache miss: the snapshot row of every user that has not changed since it was computed,
the full computation (``compute_user_metrics``) for the others.

One round trip reads the users' snapshot rows, which of them had rows arrive since the snapshot job's last slice,
and the current excluded set's fingerprint. A user is served from the snapshot when the snapshot is complete
(``ready``), was computed with this reader's weights and window and with the current excluded set, nothing of the
user arrived since, and its ``validUntil`` is ahead. A user without a row is a user with nothing to count (a full
run wrote a row for every user with an event, and any later event is an arrival). See ``app.jobs.metrics_snapshot``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from app.core.metrics import SCORE_SCALE, UserMetrics
from app.derived.changelog import EXCLUDED_FINGERPRINT_SQL
from app.derived.job_state import load_state
from app.derived.metrics_from_log import USERS_PER_QUERY, compute_user_metrics
from app.derived.tables import METRICS_JOB, SENTINEL_USER, metrics_basis, metrics_sql
from app.stores.clickhouse import chunked
from app.stores.errors import REDIS_DOWN
from app.stores.runtime import Runtime

_VALUES = (
    "followerCount, followingCount, modelCount, postCount, imageCount, reactionCount, downloadCount, "
    "generationCount, engagement"
)
READ_SQL = f"""
SELECT 'row' AS part, userId AS uid, {_VALUES},
       toInt64(arraySum(arrayFilter((w, at) -> at <= {{now:DateTime64(3, 'UTC')}}, dropWeight, dropAt))) AS dropped,
       toInt64(toUnixTimestamp64Milli(validUntil)) AS valid, '' AS fp
FROM userMetricsSnapshot
WHERE userId IN {{users:Array(Int64)}}
UNION ALL
SELECT 'changed', u, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ''
FROM (
    SELECT DISTINCT arrayJoin([userId, ownerId]) AS u FROM eventArrivals
    WHERE insertedAt > {{after:DateTime64(3, 'UTC')}}
      AND (userId IN {{users:Array(Int64)}} OR ownerId IN {{users:Array(Int64)}})
)
WHERE u IN {{users:Array(Int64)}}
UNION ALL
SELECT 'excluded', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, fp
FROM ({EXCLUDED_FINGERPRINT_SQL})
"""  # noqa: S608


def user_metrics(rt: Runtime, user_ids: Sequence[int], as_of: datetime | None = None) -> dict[int, UserMetrics]:
    """Metrics now (the snapshot where it is exact) or, with ``as_of``, at that instant (from the raw log)."""
    if as_of is None:
        return current_user_metrics(rt, user_ids)
    return compute_user_metrics(rt.clickhouse, user_ids, weights=rt.weights, window=rt.window, as_of=as_of)


def current_user_metrics(rt: Runtime, user_ids: Sequence[int]) -> dict[int, UserMetrics]:
    """Every metric of ``user_ids`` now (rank excluded): from the snapshot where it is exact, else computed."""
    users = sorted(set(user_ids))
    served, rest = from_snapshot(rt, users)
    if rest:
        served.update(compute_user_metrics(rt.clickhouse, rest, weights=rt.weights, window=rt.window))
    return served


def from_snapshot(rt: Runtime, users: Sequence[int]) -> tuple[dict[int, UserMetrics], list[int]]:
    """The users the snapshot serves exactly, and the others."""
    try:
        state = load_state(rt.redis, METRICS_JOB)
    except REDIS_DOWN:  # the job's state is unknown: compute everything, as without the snapshot
        return {}, list(users)
    if not users or state.get("ready") != "1" or state.get("basis") != metrics_basis(rt):
        return {}, list(users)
    served: dict[int, UserMetrics] = {}
    rest: list[int] = []
    now = datetime.now(UTC)  # the instant the engagement window ends at, as in the full computation
    now_ms = int(now.timestamp() * 1000)
    after = datetime.fromisoformat(state["inserted_after"])
    sql = metrics_sql(READ_SQL, rt.clickhouse)
    for part in chunked(users, USERS_PER_QUERY):
        rows = rt.clickhouse.rows(sql, {"users": [SENTINEL_USER, *part], "after": after, "now": now})
        generation = [int(r[10]) for r in rows if r[0] == "row" and int(r[1]) == SENTINEL_USER]
        if generation != [int(state.get("generation", -1))] or any(
            kind == "excluded" and fp != state.get("excluded_set") for kind, *_, fp in rows
        ):
            rest.extend(part)  # another table than the state's, or another excluded set: compute
            continue
        changed = {int(r[1]) for r in rows if r[0] == "changed"}
        found = {int(r[1]): r for r in rows if r[0] == "row"}
        for uid in part:
            row = found.get(uid)
            if uid in changed or (row is not None and int(row[12]) <= now_ms):
                rest.append(uid)
            elif row is None:
                served[uid] = UserMetrics()
            else:
                served[uid] = _metrics(row)
    return served, rest


def _metrics(row: Sequence[Any]) -> UserMetrics:
    values = [int(v) for v in row[2:12]]
    followers, following, models, posts, images, reactions, downloads, generations, engagement, dropped = values
    return UserMetrics(
        follower_count=followers,
        following_count=following,
        model_count=models,
        post_count=posts,
        image_count=images,
        upload_count=models + posts + images,
        reaction_count=reactions,
        download_count=downloads,
        generation_count=generations,
        engagement_score=Decimal(engagement - dropped) / SCORE_SCALE,
    )
