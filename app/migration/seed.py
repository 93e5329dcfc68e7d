"""``python -m app seed-legacy``: a realistic legacy dataset for demos, tests and benchmarks, bulk loaded.

Zipf popularity (a few users get most follows and reactions, a few images most reactions), follows, uploads
(models, posts, images on posts), reactions (Like/Heart/Laugh/Cry and some Dislike), a share of deleted and banned
users, and the legacy ``UserMetric`` rows left empty (the legacy job fills them). Deterministic for a seed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine, Table, insert, text

from app.legacy.models import (
    Collection,
    EngagementType,
    Image,
    ImageReaction,
    Model,
    Post,
    ReviewReactions,
    User,
    UserEngagement,
)
from app.ops.simulate import Zipf

CHUNK = 20_000
REACTIONS = list(ReviewReactions)


@dataclass(frozen=True)
class LegacySpec:
    users: int
    follows_per_user: float = 8.0
    images_per_user: float = 3.0
    reactions_per_user: float = 20.0
    deleted_share: float = 0.01
    banned_share: float = 0.01
    seed: int = 7
    days: int = 400


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    while batch := list(itertools.islice(rows, CHUNK)):
        yield batch


class _Rows:
    """The rows of each legacy table, generated lazily in a fixed order (the same seed gives the same data)."""

    def __init__(self, spec: LegacySpec) -> None:
        self.spec = spec
        self.rnd = random.Random(spec.seed)  # noqa: S311 - synthetic data, not security
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.start = self.now - timedelta(days=spec.days)
        self.popular = Zipf(spec.users, 1.1, self.rnd).draw
        self.n_images = int(spec.users * spec.images_per_user)
        self.n_posts = max(1, self.n_images // 3)
        self.n_models = max(1, spec.users // 5)
        self.image_owner = [0] + [self.popular() for _ in range(self.n_images)]
        self.image_pick = Zipf(self.n_images, 1.05, self.rnd).draw

    def when(self) -> datetime:
        return self.start + timedelta(microseconds=self.rnd.randrange(self.spec.days * 86_400_000_000))

    def users(self) -> Iterator[dict[str, Any]]:
        deleted, banned = self.spec.deleted_share, self.spec.deleted_share + self.spec.banned_share
        for u in range(1, self.spec.users + 1):
            roll = self.rnd.random()
            yield {
                "id": u,
                "username": f"user{u}",
                "createdAt": self.start,
                "deletedAt": self.now if roll < deleted else None,
                "bannedAt": self.now if deleted <= roll < banned else None,
            }

    def models(self) -> Iterator[dict[str, Any]]:
        for i in range(1, self.n_models + 1):
            yield {"id": i, "userId": self.popular(), "name": f"model {i}", "createdAt": self.when(), "deletedAt": None}

    def posts(self) -> Iterator[dict[str, Any]]:
        for i in range(1, self.n_posts + 1):
            yield {"id": i, "userId": self.popular(), "title": None, "createdAt": self.when()}

    def images(self) -> Iterator[dict[str, Any]]:
        for i in range(1, self.n_images + 1):
            yield {"id": i, "userId": self.image_owner[i], "postId": 1 + i % self.n_posts, "createdAt": self.when()}

    def collections(self) -> Iterator[dict[str, Any]]:
        for i in range(1, self.spec.users // 10 + 1):
            yield {"id": i, "userId": 1 + i % self.spec.users, "name": f"collection {i}", "createdAt": self.when()}

    def follows(self) -> Iterator[dict[str, Any]]:
        seen: set[tuple[int, int]] = set()
        for _ in range(int(self.spec.users * self.spec.follows_per_user)):
            a, b = self.rnd.randint(1, self.spec.users), self.popular()
            if a == b or (a, b) in seen:
                continue
            seen.add((a, b))
            hidden = self.rnd.random() >= 0.95
            kind = self.rnd.choice([EngagementType.HIDE, EngagementType.BLOCK]) if hidden else EngagementType.FOLLOW
            yield {"userId": a, "targetUserId": b, "type": kind, "createdAt": self.when()}

    def reactions(self) -> Iterator[dict[str, Any]]:
        seen: set[tuple[int, int, str]] = set()
        rid = 0
        for _ in range(int(self.spec.users * self.spec.reactions_per_user)):
            key = (self.image_pick(), self.rnd.randint(1, self.spec.users), self.rnd.choice(REACTIONS))
            if key in seen:
                continue
            seen.add(key)
            rid += 1
            at = self.when()
            yield {"id": rid, "imageId": key[0], "userId": key[1], "reaction": key[2], "createdAt": at, "updatedAt": at}

    def plan(self) -> list[tuple[Any, Callable[[], Iterator[dict[str, Any]]]]]:
        return [
            (User, self.users),
            (Model, self.models),
            (Post, self.posts),
            (Image, self.images),
            (Collection, self.collections),
            (UserEngagement, self.follows),
            (ImageReaction, self.reactions),
        ]


def seed(eng: Engine, spec: LegacySpec, progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Fill an empty legacy database; returns rows written per table."""
    plan = _Rows(spec).plan()
    postgres = eng.dialect.name == "postgresql"
    counts: dict[str, int] = {}
    with eng.begin() as conn:
        for model, rows in plan:
            table = cast(Table, model.__table__)
            counts[table.name] = (
                _copy(conn, table, rows(), progress) if postgres else _insert(conn, table, rows(), progress)
            )
        if postgres:
            _after_bulk_load(conn, [cast(Table, model.__table__) for model, _ in plan])
    return counts


def _insert(
    conn: Any, table: Table, rows: Iterator[dict[str, Any]], progress: Callable[[str, int], None] | None
) -> int:
    n = 0
    for batch in _chunks(rows):
        conn.execute(insert(table), batch)
        n += len(batch)
        if progress:
            progress(table.name, len(batch))
    return n


def _after_bulk_load(conn: Any, tables: list[Table]) -> None:
    """PostgreSQL: explicit ids were written, so move the sequences past them; then gather statistics (a live
    database has them, and the legacy queries are planned with them)."""
    for table in tables:
        if "id" in table.c:
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('\"{table.name}\"', 'id'), "  # noqa: S608
                    f'COALESCE((SELECT max(id) FROM "{table.name}"), 0) + 1, false)'
                )
            )
    conn.execute(text("ANALYZE"))


def _copy(conn: Any, table: Table, rows: Iterator[dict[str, Any]], progress: Callable[[str, int], None] | None) -> int:
    """PostgreSQL bulk load: ``COPY ... FROM STDIN`` on the transaction's own connection."""
    columns = [c.name for c in table.columns]
    cursor = conn.connection.driver_connection.cursor()
    n = 0
    quoted = ", ".join(f'"{c}"' for c in columns)
    with cursor.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy:
        for batch in _chunks(rows):
            for row in batch:
                copy.write_row([row[c] for c in columns])
            n += len(batch)
            if progress:
                progress(table.name, len(batch))
    return n
