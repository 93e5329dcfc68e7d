"""``python -m app archive-image-reactions``: the last phase for reactions (stop writes, archive).

Refuses unless ClickHouse holds every legacy reaction: each legacy (user, image, reaction) row must exist as a
reaction key in ClickHouse, and the counts per user and per image must be equal. Then the table is exported to
Parquet, and the statements that drop it are printed; they run only with ``--confirm``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, select, text

from app.legacy.models import REACTION_METRIC, ImageReaction, ReviewReactions
from app.stores.runtime import Runtime

DROP_STATEMENTS = ['DROP TABLE "ImageReaction"']
CHUNK = 100_000


@dataclass
class ArchiveCheck:
    legacy_rows: int = 0
    missing: int = 0
    missing_examples: list[tuple[int, int, str]] = field(default_factory=list)
    users_differing: int = 0
    images_differing: int = 0

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.users_differing == 0 and self.images_differing == 0


def verify(rt: Runtime, eng: Engine) -> ArchiveCheck:
    check = ArchiveCheck()
    rows = rt.clickhouse.rows(
        "SELECT userId, entityId, metricType FROM stateByActor FINAL "
        "WHERE entityType = 'Image' AND metricType IN ('ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry')"
    )
    present = {(int(u), int(i), str(m)) for u, i, m in rows}
    legacy_users: Counter[int] = Counter()
    legacy_images: Counter[int] = Counter()
    covered_users: Counter[int] = Counter()
    covered_images: Counter[int] = Counter()
    query = select(ImageReaction.userId, ImageReaction.imageId, ImageReaction.reaction).where(
        ImageReaction.reaction.in_(list(REACTION_METRIC))
    )
    with eng.connect() as conn:
        for user, image, reaction in conn.execute(query):
            key = (int(user), int(image), REACTION_METRIC[ReviewReactions(reaction)].value)
            check.legacy_rows += 1
            legacy_users[key[0]] += 1
            legacy_images[key[1]] += 1
            if key in present:
                covered_users[key[0]] += 1
                covered_images[key[1]] += 1
            else:
                check.missing += 1
                if len(check.missing_examples) < 5:
                    check.missing_examples.append(key)
    check.users_differing = sum(1 for u, n in legacy_users.items() if covered_users[u] != n)
    check.images_differing = sum(1 for i, n in legacy_images.items() if covered_images[i] != n)
    return check


def export_parquet(eng: Engine, path: Path) -> int:
    """Write the whole legacy table (Dislike included) to ``path``; returns the rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("imageId", pa.int64()),
            ("userId", pa.int64()),
            ("reaction", pa.string()),
            ("createdAt", pa.timestamp("ms", tz="UTC")),
            ("updatedAt", pa.timestamp("ms", tz="UTC")),
        ]
    )
    r = ImageReaction
    written = 0
    with pq.ParquetWriter(path, schema) as writer, eng.connect() as conn:
        result = conn.execution_options(yield_per=CHUNK).execute(
            select(r.id, r.imageId, r.userId, r.reaction, r.createdAt, r.updatedAt).order_by(r.id)
        )
        for part in result.partitions(CHUNK):
            cols = list(zip(*part, strict=True))
            batch = pa.record_batch(
                [
                    pa.array(cols[0], pa.int64()),
                    pa.array(cols[1], pa.int64()),
                    pa.array(cols[2], pa.int64()),
                    pa.array([ReviewReactions(x).value for x in cols[3]], pa.string()),
                    pa.array(cols[4], pa.timestamp("ms", tz="UTC")),
                    pa.array(cols[5], pa.timestamp("ms", tz="UTC")),
                ],
                schema=schema,
            )
            writer.write_batch(batch)
            written += len(part)
    return written


def drop(eng: Engine) -> None:
    with eng.begin() as conn:
        for statement in DROP_STATEMENTS:
            conn.execute(text(statement))
