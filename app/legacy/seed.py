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
from app.simulate import Zipf

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


def seed(eng: Engine, spec: LegacySpec, progress: Callable[[str, int], None] | None = None) -> dict[str, int]:  # noqa: C901 - one generator per table
    """Fill an empty legacy database; returns rows written per table."""
    rnd = random.Random(spec.seed)  # noqa: S311 - synthetic data, not security
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=spec.days)

    def when() -> datetime:
        return start + timedelta(microseconds=rnd.randrange(spec.days * 86_400_000_000))

    popular = Zipf(spec.users, 1.1, rnd).draw
    n_images = int(spec.users * spec.images_per_user)
    n_posts = max(1, n_images // 3)
    n_models = max(1, spec.users // 5)
    image_owner = [0] + [popular() for _ in range(n_images)]
    counts: dict[str, int] = {}

    def users() -> Iterator[dict[str, Any]]:
        for u in range(1, spec.users + 1):
            roll = rnd.random()
            yield {
                "id": u,
                "username": f"user{u}",
                "createdAt": start,
                "deletedAt": now if roll < spec.deleted_share else None,
                "bannedAt": now if spec.deleted_share <= roll < spec.deleted_share + spec.banned_share else None,
            }

    def models() -> Iterator[dict[str, Any]]:
        for i in range(1, n_models + 1):
            yield {"id": i, "userId": popular(), "name": f"model {i}", "createdAt": when(), "deletedAt": None}

    def posts() -> Iterator[dict[str, Any]]:
        for i in range(1, n_posts + 1):
            yield {"id": i, "userId": popular(), "title": None, "createdAt": when()}

    def images() -> Iterator[dict[str, Any]]:
        for i in range(1, n_images + 1):
            yield {"id": i, "userId": image_owner[i], "postId": 1 + i % n_posts, "createdAt": when()}

    def collections() -> Iterator[dict[str, Any]]:
        for i in range(1, spec.users // 10 + 1):
            yield {"id": i, "userId": 1 + i % spec.users, "name": f"collection {i}", "createdAt": when()}

    def follows() -> Iterator[dict[str, Any]]:
        seen: set[tuple[int, int]] = set()
        for _ in range(int(spec.users * spec.follows_per_user)):
            a, b = rnd.randint(1, spec.users), popular()
            if a != b and (a, b) not in seen:
                seen.add((a, b))
                kind = (
                    EngagementType.FOLLOW
                    if rnd.random() < 0.95
                    else rnd.choice([EngagementType.HIDE, EngagementType.BLOCK])
                )
                yield {"userId": a, "targetUserId": b, "type": kind, "createdAt": when()}

    image_pick = Zipf(n_images, 1.05, rnd).draw

    def reactions() -> Iterator[dict[str, Any]]:
        seen: set[tuple[int, int, str]] = set()
        rid = 0
        for _ in range(int(spec.users * spec.reactions_per_user)):
            key = (image_pick(), rnd.randint(1, spec.users), rnd.choice(REACTIONS))
            if key not in seen:
                seen.add(key)
                rid += 1
                at = when()
                yield {
                    "id": rid,
                    "imageId": key[0],
                    "userId": key[1],
                    "reaction": key[2],
                    "createdAt": at,
                    "updatedAt": at,
                }

    plan = [
        (User, users),
        (Model, models),
        (Post, posts),
        (Image, images),
        (Collection, collections),
        (UserEngagement, follows),
        (ImageReaction, reactions),
    ]
    with eng.begin() as conn:
        for model, rows in plan:
            table = cast(Table, model.__table__)
            n = 0
            if eng.dialect.name == "postgresql":
                n = _copy(conn, table, rows(), progress)
            else:
                for batch in _chunks(rows()):
                    conn.execute(insert(table), batch)
                    n += len(batch)
                    if progress:
                        progress(table.name, len(batch))
            counts[table.name] = n
        if eng.dialect.name == "postgresql":  # explicit ids were written: move the sequences past them
            for model, _ in plan:
                table = cast(Table, model.__table__)
                if "id" in table.c:
                    conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('\"{table.name}\"', 'id'), "  # noqa: S608
                            f'COALESCE((SELECT max(id) FROM "{table.name}"), 0) + 1, false)'
                        )
                    )
        if eng.dialect.name == "postgresql":
            conn.execute(text("ANALYZE"))  # a live database has statistics; the legacy queries are planned with them
    return counts


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
