"""The legacy aggregation this project replaces: per-user counts computed in SQL across the legacy tables (the job
that ran every minute and wrote ``UserMetric``), and the indexed reactions lookup. The comparison tool, the
``postgres``/``dual`` read sources and the benchmark all use this code.

Definitions match docs/architecture.md ("The metrics") on the legacy data: deleted or banned users' actions count
for nobody (they are the excluded users of the new system), self-actions do not count, Dislike has no flag and no
count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, delete, func, insert, select
from sqlalchemy.orm import aliased

from app.legacy.models import (
    REACTION_FLAG,
    EngagementType,
    Image,
    ImageReaction,
    MetricTimeframe,
    Model,
    Post,
    ReviewReactions,
    User,
    UserEngagement,
    UserMetric,
)

COUNTED = list(REACTION_FLAG)
FIELDS = ("followerCount", "followingCount", "modelCount", "postCount", "imageCount", "uploadCount", "reactionCount")


def _active(actor: Any) -> Any:
    return and_(actor.deletedAt.is_(None), actor.bannedAt.is_(None))


def _queries(users: Sequence[int] | None) -> dict[str, Any]:
    follower = aliased(User)
    reactor = aliased(User)
    e = UserEngagement
    q: dict[str, Any] = {
        "followerCount": select(e.targetUserId, func.count())
        .join(follower, follower.id == e.userId)
        .where(e.type == EngagementType.FOLLOW, e.userId != e.targetUserId, _active(follower))
        .group_by(e.targetUserId),
        "followingCount": select(e.userId, func.count()).where(e.type == EngagementType.FOLLOW).group_by(e.userId),
        "modelCount": select(Model.userId, func.count()).where(Model.deletedAt.is_(None)).group_by(Model.userId),
        "postCount": select(Post.userId, func.count()).group_by(Post.userId),
        "imageCount": select(Image.userId, func.count()).group_by(Image.userId),
        "reactionCount": select(Image.userId, func.count())
        .select_from(ImageReaction)
        .join(Image, Image.id == ImageReaction.imageId)
        .join(reactor, reactor.id == ImageReaction.userId)
        .where(ImageReaction.reaction.in_(COUNTED), ImageReaction.userId != Image.userId, _active(reactor))
        .group_by(Image.userId),
    }
    if users is not None:
        keys = {
            "followerCount": e.targetUserId,
            "followingCount": e.userId,
            "modelCount": Model.userId,
            "postCount": Post.userId,
            "imageCount": Image.userId,
            "reactionCount": Image.userId,
        }
        q = {name: query.where(keys[name].in_(list(users))) for name, query in q.items()}
    return q


def legacy_user_metrics(eng: Engine, users: Iterable[int] | None = None) -> dict[int, dict[str, int]]:
    """The legacy per-user counts, for ``users`` or for everybody with any count."""
    ids = sorted(set(users)) if users is not None else None
    out: dict[int, dict[str, int]] = {u: dict.fromkeys(FIELDS, 0) for u in ids or []}
    with eng.connect() as conn:
        for name, query in _queries(ids).items():
            for uid, n in conn.execute(query):
                out.setdefault(int(uid), dict.fromkeys(FIELDS, 0))[name] = int(n)
    for m in out.values():
        m["uploadCount"] = m["modelCount"] + m["postCount"] + m["imageCount"]
    return out


def run_legacy_job(eng: Engine) -> int:
    """The job as it ran every minute: recompute every user's all-time ``UserMetric`` row. Returns rows written."""
    metrics = legacy_user_metrics(eng)
    now = datetime.now(UTC)
    rows = [
        {
            "userId": u,
            "timeframe": MetricTimeframe.ALL_TIME,
            "followerCount": m["followerCount"],
            "followingCount": m["followingCount"],
            "reactionCount": m["reactionCount"],
            "hiddenCount": 0,
            "uploadCount": m["uploadCount"],
            "updatedAt": now,
        }
        for u, m in metrics.items()
    ]
    with eng.begin() as conn:
        conn.execute(delete(UserMetric).where(UserMetric.timeframe == MetricTimeframe.ALL_TIME))
        for i in range(0, len(rows), 10_000):
            conn.execute(insert(UserMetric), rows[i : i + 10_000])
    return len(rows)


def legacy_reactions(eng: Engine, user_id: int, image_ids: Sequence[int]) -> dict[int, int]:
    """A user's reaction flags on images, with the indexed legacy query (userId, imageId)."""
    out = dict.fromkeys((int(i) for i in image_ids), 0)
    query = select(ImageReaction.imageId, ImageReaction.reaction).where(
        ImageReaction.userId == user_id, ImageReaction.imageId.in_(list(out))
    )
    with eng.connect() as conn:
        for image, reaction in conn.execute(query):
            out[int(image)] |= int(REACTION_FLAG.get(ReviewReactions(reaction), 0))
    return out


def excluded_legacy_users(eng: Engine) -> dict[int, str]:
    """Deleted and banned users (their actions count for nobody), with the reason."""
    query = select(User.id, User.deletedAt, User.bannedAt).where(
        (User.deletedAt.is_not(None)) | (User.bannedAt.is_not(None))
    )
    with eng.connect() as conn:
        return {int(u): "legacy: deleted" if d is not None else "legacy: banned" for u, d, _ in conn.execute(query)}
