"""The legacy PostgreSQL tables, as SQLAlchemy 2.0 typed models (names and constraints as the site has them).

They work on PostgreSQL (``DATABASE_URL``) and on SQLite (the embedded default) alike.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.core.events import REACTION_TYPES, MetricType, ReactionFlag

# SQLite only makes INTEGER PRIMARY KEY columns autoincrement; PostgreSQL gets BIGINT.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    """A database enum holding the members' values ("Follow"), as the legacy schema does."""
    return Enum(cls, name=name, values_callable=lambda members: [m.value for m in members])


class EngagementType(enum.StrEnum):
    FOLLOW = "Follow"
    HIDE = "Hide"
    BLOCK = "Block"


class ReviewReactions(enum.StrEnum):
    LIKE = "Like"
    DISLIKE = "Dislike"
    LAUGH = "Laugh"
    CRY = "Cry"
    HEART = "Heart"


# The reactions the service counts, as its bit flags; Dislike has none (the seed counts four kinds). Every mapping of a
# legacy reaction (migration, the legacy baseline, a web app's dual write) derives from this one.
REACTION_FLAG: dict[ReviewReactions, ReactionFlag] = {
    ReviewReactions.LIKE: ReactionFlag.LIKE,
    ReviewReactions.HEART: ReactionFlag.HEART,
    ReviewReactions.LAUGH: ReactionFlag.LAUGH,
    ReviewReactions.CRY: ReactionFlag.CRY,
}
# ... and as the event log's metric types.
REACTION_METRIC: dict[ReviewReactions, MetricType] = {r: REACTION_TYPES[f] for r, f in REACTION_FLAG.items()}


class MetricTimeframe(enum.StrEnum):
    DAY = "Day"
    WEEK = "Week"
    MONTH = "Month"
    YEAR = "Year"
    ALL_TIME = "AllTime"


class User(Base):
    __tablename__ = "User"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    createdAt: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deletedAt: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    bannedAt: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Model(Base):
    __tablename__ = "Model"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    userId: Mapped[int] = mapped_column(ForeignKey("User.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    createdAt: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deletedAt: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Post(Base):
    __tablename__ = "Post"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    userId: Mapped[int] = mapped_column(ForeignKey("User.id"), index=True)
    title: Mapped[str | None] = mapped_column(String(200), default=None)
    createdAt: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Image(Base):
    __tablename__ = "Image"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    userId: Mapped[int] = mapped_column(ForeignKey("User.id"), index=True)
    postId: Mapped[int | None] = mapped_column(ForeignKey("Post.id"), index=True, default=None)
    createdAt: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Collection(Base):
    __tablename__ = "Collection"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    userId: Mapped[int] = mapped_column(ForeignKey("User.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    createdAt: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserEngagement(Base):
    __tablename__ = "UserEngagement"
    userId: Mapped[int] = mapped_column(ForeignKey("User.id"), primary_key=True)  # the follower
    targetUserId: Mapped[int] = mapped_column(ForeignKey("User.id"), primary_key=True, index=True)
    type: Mapped[EngagementType] = mapped_column(_enum(EngagementType, "UserEngagementType"))
    createdAt: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ImageReaction(Base):
    __tablename__ = "ImageReaction"
    __table_args__ = (
        UniqueConstraint("imageId", "userId", "reaction", name="ImageReaction_imageId_userId_reaction_key"),
        Index("ImageReaction_userId_imageId_idx", "userId", "imageId"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    imageId: Mapped[int] = mapped_column(ForeignKey("Image.id"), index=True)
    userId: Mapped[int] = mapped_column(ForeignKey("User.id"))
    reaction: Mapped[ReviewReactions] = mapped_column(_enum(ReviewReactions, "ReviewReactions"))
    createdAt: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updatedAt: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserMetric(Base):
    __tablename__ = "UserMetric"
    userId: Mapped[int] = mapped_column(ForeignKey("User.id"), primary_key=True)
    timeframe: Mapped[MetricTimeframe] = mapped_column(_enum(MetricTimeframe, "MetricTimeframe"), primary_key=True)
    followingCount: Mapped[int] = mapped_column(Integer, default=0)
    followerCount: Mapped[int] = mapped_column(Integer, default=0)
    reactionCount: Mapped[int] = mapped_column(Integer, default=0)
    hiddenCount: Mapped[int] = mapped_column(Integer, default=0)
    uploadCount: Mapped[int] = mapped_column(Integer, default=0)
    updatedAt: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
