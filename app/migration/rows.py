"""The backfill's portable path: legacy rows read through SQLAlchemy in key order and turned into events in Python.

Each legacy table is a ``Source``: the query of its rows, their key (keyset pagination), and the events of a row.
Event ids are derived from the row's key, so the engine path (``app.migration.pull``) derives the same ids in SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, or_, select, tuple_

from app.core.events import Event, MetricType, as_utc, derive_event_id
from app.legacy.models import (
    REACTION_METRIC,
    EngagementType,
    Image,
    ImageReaction,
    Model,
    Post,
    ReviewReactions,
    UserEngagement,
)


def _id(*parts: object) -> Any:
    return derive_event_id("legacy", ":".join(str(p) for p in parts))


@dataclass
class Source:
    """One legacy table: its keyset query and how a row becomes events."""

    name: str
    query: Callable[[datetime | None], Any]
    key: Callable[[Any], tuple[Any, ...]]
    key_columns: Callable[[], Any]
    to_events: Callable[[Any], list[Event]]


def _follows(row: Any) -> list[Event]:
    follower, target, created = row
    return [
        Event(
            _id("UserEngagement", follower, target),
            "User",
            target,
            follower,
            target,
            MetricType.FOLLOW,
            1,
            as_utc(created),
        )
    ]


def _upload(kind: str) -> Callable[[Any], list[Event]]:
    def convert(row: Any) -> list[Event]:
        entity, owner, created, *deleted = row
        out = [Event(_id(kind, entity), kind, entity, owner, owner, MetricType.UPLOAD, 1, as_utc(created))]
        if deleted and deleted[0] is not None:
            out.append(
                Event(
                    _id(kind, entity, "deleted"), kind, entity, owner, owner, MetricType.UPLOAD, -1, as_utc(deleted[0])
                )
            )
        return out

    return convert


def _reaction(row: Any) -> list[Event]:
    rid, image, user, reaction, created, owner = row
    metric = REACTION_METRIC[ReviewReactions(reaction)]
    return [
        Event(_id("ImageReaction", image, user, metric.value), "Image", image, user, owner, metric, 1, as_utc(created))
    ]


def sources(entities: Sequence[str]) -> list[Source]:
    def since_filter(column: Any, since: datetime | None) -> Any:
        return column >= since if since is not None else True

    out: list[Source] = []
    if "follows" in entities:
        e = UserEngagement
        out.append(
            Source(
                "follows",
                lambda since: select(e.userId, e.targetUserId, e.createdAt).where(
                    e.type == EngagementType.FOLLOW, since_filter(e.createdAt, since)
                ),
                lambda row: (row[0], row[1]),
                lambda: tuple_(e.userId, e.targetUserId),
                _follows,
            )
        )
    if "uploads" in entities:
        out.append(
            Source(
                "uploads:Model",
                # A model created before ``since`` and removed after it: its removal is new.
                lambda since: select(Model.id, Model.userId, Model.createdAt, Model.deletedAt).where(
                    or_(since_filter(Model.createdAt, since), since_filter(Model.deletedAt, since))
                ),
                lambda row: (row[0],),
                lambda: tuple_(Model.id),
                _upload("Model"),
            )
        )
        out.append(
            Source(
                "uploads:Post",
                lambda since: select(Post.id, Post.userId, Post.createdAt).where(since_filter(Post.createdAt, since)),
                lambda row: (row[0],),
                lambda: tuple_(Post.id),
                _upload("Post"),
            )
        )
        out.append(
            Source(
                "uploads:Image",
                lambda since: select(Image.id, Image.userId, Image.createdAt).where(
                    since_filter(Image.createdAt, since)
                ),
                lambda row: (row[0],),
                lambda: tuple_(Image.id),
                _upload("Image"),
            )
        )
    if "reactions" in entities:
        r = ImageReaction
        out.append(
            Source(
                "reactions",
                lambda since: (
                    select(r.id, r.imageId, r.userId, r.reaction, r.createdAt, Image.userId)
                    .join(Image, Image.id == r.imageId)
                    .where(r.reaction.in_(list(REACTION_METRIC)), since_filter(r.updatedAt, since))
                ),
                lambda row: (row[0],),
                lambda: tuple_(r.id),
                _reaction,
            )
        )
    return out


def chunks(eng: Engine, src: Source, since: datetime | None, after: list[Any] | None, size: int) -> Iterator[list[Any]]:
    last = after
    with eng.connect() as conn:
        while True:
            query = src.query(since)
            if last is not None:
                query = query.where(src.key_columns() > tuple_(*last))
            rows = list(conn.execute(query.order_by(*src.key_columns().clauses).limit(size)))
            if not rows:
                return
            yield rows
            last = list(src.key(rows[-1]))
