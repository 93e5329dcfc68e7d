"""``bench seeds``' migration phase, in a process of its own (in the embedded shape the engine then belongs to the
worker the reads go through): the legacy database backfilled into a fresh ClickHouse, the jobs the reads need, the
migration's own checks, and the storage of the same reactions on both sides.

- **Backfill** (``app.migration.backfill``), then engagement and ranks, then the metrics and reactions snapshots.
- **Zero data loss**: ``archive.verify`` (every legacy reaction row as a reaction key in ClickHouse, the counts per
  user and per image equal: the check ``archive-image-reactions`` refuses on) and the reaction pairs of
  ``compare``'s sampled reactors.
- **Accurate historical metrics**: ``compare`` over every user and metric, PostgreSQL's aggregation against
  ClickHouse, with each mismatch's reason.
- **Storage**: the legacy ``ImageReaction`` table with its indexes (``pg_total_relation_size``) against the same
  reactions alone backfilled into a database of their own (``seeds_storage``): the compressed bytes of its active
  parts, per table, after the reactions snapshot and a final merge; and the Redis memory (``MEMORY USAGE``) of
  sampled reactors' hashes holding all their reactions, per cached reaction.

``python -m bench.seeds_prepare`` reads its payload as JSON on stdin and prints the figures as JSON.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

from sqlalchemy import Engine, create_engine, func, select, text

from app.caches import reactions_cache
from app.core.settings import Settings
from app.derived.changelog import INFLIGHT_MARGIN
from app.jobs.engagement import recompute_engagement
from app.jobs.ranks import recompute_ranks
from app.jobs.reactions_snapshot import snapshot_reactions
from app.legacy.models import REACTION_METRIC, ImageReaction
from app.migration import archive
from app.migration.backfill import backfill
from app.migration.compare import compare
from app.read.clickhouse_sources import clickhouse_complete_source, clickhouse_reaction_source
from app.read.reactions_service import MAX_IMAGES_PER_READ, UserReactionQueryService
from app.stores import clickhouse, migrations
from app.stores.runtime import Runtime
from bench.harness import Figures
from bench.read import settle, take_snapshot

STORAGE_DATABASE = "seeds_storage"
# Tables a reaction does not touch: the migrations' and the backfill's bookkeeping, the excluded users.
BOOKKEEPING = ("schema_migrations", "backfillCheckpoints", "excludedUsers")
_FLAGGED = ImageReaction.reaction.in_(list(REACTION_METRIC))


def prepare(payload: dict[str, Any]) -> dict[str, Any]:
    settings = Settings(**payload["env"])
    eng = create_engine(payload["database_url"])
    ch = clickhouse.connect(settings)
    if not ch.embedded:  # a server keeps databases between runs; the embedded path was removed before this one
        ch.client.database = "default"  # a request may not name the database it drops
        ch.command(f"DROP DATABASE IF EXISTS {ch.database}")
        ch.command(f"CREATE DATABASE {ch.database}")
        ch.client.database = ch.database
    migrations.migrate(ch)
    rt = Runtime(settings, clickhouse=ch)
    f = Figures()
    report = backfill(rt, eng)
    f["backfill_rows"], f["backfill_rows_per_s"] = sum(report.rows.values()), report.rows_per_s
    f["engagement_full_s"] = recompute_engagement(rt, full=True).seconds + recompute_ranks(rt).seconds
    take_snapshot(rt, f, generated=True)  # the snapshots the misses read
    f["settle_s"] = settle(ch)

    check = archive.verify(rt, eng)
    f["verify_legacy_rows"], f["verify_missing"] = check.legacy_rows, check.missing
    f["verify_users_differing"], f["verify_images_differing"] = check.users_differing, check.images_differing
    cmp = compare(rt, eng, reactions_sample=int(payload["compare_reactors"]), seed=5)
    f["compare_users"], f["compare_unexplained"] = cmp.users, cmp.unexplained
    f["compare_values"] = sum(m.compared for m in cmp.metrics.values())
    f["compare_mismatches"] = sum(m.mismatches for m in cmp.metrics.values())
    f["compare_reaction_pairs"], f["compare_reaction_mismatches"] = cmp.reaction_pairs, cmp.reaction_mismatches
    reasons: dict[str, int] = {}
    for m in cmp.metrics.values():
        for why, n in m.reasons.items():
            reasons[why] = reasons.get(why, 0) + n
    out: dict[str, Any] = dict(f)
    out["compare_reasons"] = reasons
    out.update(_storage(ch, settings, eng, payload["scratch_redis_url"], int(payload["redis_reactors"])))
    ch.close()
    return out


def _storage(
    ch: clickhouse.ClickHouse, settings: Settings, eng: Engine, redis_url: str, reactors: int
) -> dict[str, Any]:
    home = ch.client.database
    ch.command(f"DROP DATABASE IF EXISTS {STORAGE_DATABASE}")
    ch.command(f"CREATE DATABASE {STORAGE_DATABASE}")
    ch.client.database = STORAGE_DATABASE
    scratch = clickhouse.ClickHouse(ch.client, STORAGE_DATABASE, embedded=ch.embedded)
    try:
        migrations.migrate(scratch)
        rt = Runtime(settings.model_copy(update={"redis_url": redis_url}), clickhouse=scratch)
        rt.redis.flushdb()
        backfill(rt, eng, entities=("reactions",))
        time.sleep(INFLIGHT_MARGIN.total_seconds() + 0.5)  # the snapshot's full run sees every backfilled row
        snapshot_reactions(rt, full=True)
        for (table,) in scratch.rows(_MERGE_TREES_SQL):  # what background merges converge to; comparable runs
            scratch.command(f"OPTIMIZE TABLE `{table}` FINAL")
        rows = scratch.rows(_SIZES_SQL)
        sizes = [(str(t), int(b or 0), int(c or 0)) for t, b, c in rows if str(t) not in BOOKKEEPING]
        out: dict[str, Any] = {
            "clickhouse_table_bytes": {t: b for t, b, _ in sizes if b},
            "clickhouse_table_compressed_bytes": {t: c for t, _, c in sizes if c},
        }
        out.update(_redis_bytes(rt, eng, reactors))
    finally:
        ch.client.database = home
        ch.command(f"DROP DATABASE IF EXISTS {STORAGE_DATABASE}")
    out.update(_legacy_bytes(eng))
    return out


def _redis_bytes(rt: Runtime, eng: Engine, sample: int) -> dict[str, float]:
    """Every reaction of up to ``sample`` reactors cached through the read service, their hashes' memory per cached
    reaction, and the number of (user, image) pairs all reactions make."""
    with eng.connect() as conn:
        # The distinct pairs of 8.5 million rows: in memory (the default 4 MB spilled and ran for more than 16 minutes).
        conn.execute(text("SET LOCAL work_mem = '1GB'"))
        users = sorted(int(u) for (u,) in conn.execute(select(ImageReaction.userId).where(_FLAGGED).distinct()))
        pairs = select(ImageReaction.userId, ImageReaction.imageId).where(_FLAGGED).distinct().subquery()
        total_pairs = int(conn.execute(select(func.count()).select_from(pairs)).scalar_one())
    chosen = sorted(random.Random(9).sample(users, min(sample, len(users))))  # noqa: S311 - sampling
    service = UserReactionQueryService(
        rt.redis, clickhouse_reaction_source(rt), fills=None, complete=clickhouse_complete_source(rt)
    )
    cached = used = 0
    for i in range(0, len(chosen), 500):
        group = chosen[i : i + 500]
        query = select(ImageReaction.userId, ImageReaction.imageId).where(_FLAGGED, ImageReaction.userId.in_(group))
        images: dict[int, set[int]] = {u: set() for u in group}
        with eng.connect() as conn:
            for u, image in conn.execute(query):
                images[int(u)].add(int(image))
        for u, ids in images.items():
            page = sorted(ids)
            for j in range(0, len(page), MAX_IMAGES_PER_READ):
                service.get_user_reactions(u, page[j : j + MAX_IMAGES_PER_READ])
            cached += len(page)
            for key in (reactions_cache.flags_key(u), reactions_cache.versions_key(u)):
                used += int(rt.redis.memory_usage(key, samples=0) or 0)
    rt.redis.flushdb()
    return {
        "redis_sampled_reactors": len(chosen),
        "redis_reactors": len(users),
        "redis_sampled_pairs": cached,
        "redis_bytes_per_pair": used / cached if cached else 0.0,
        "reaction_pairs": total_pairs,
    }


def _legacy_bytes(eng: Engine) -> dict[str, float]:
    """PostgreSQL's own size of the legacy table with its indexes and TOAST, and its rows (all, and those with a flag:
    Dislike has none and is not migrated)."""
    with eng.connect() as conn:
        size = int(conn.execute(text("SELECT pg_total_relation_size('\"ImageReaction\"')")).scalar_one())
        heap = int(conn.execute(text("SELECT pg_relation_size('\"ImageReaction\"')")).scalar_one())
        rows = int(conn.execute(select(func.count()).select_from(ImageReaction)).scalar_one())
        flagged = int(conn.execute(select(func.count()).select_from(ImageReaction).where(_FLAGGED)).scalar_one())
    return {"legacy_total_bytes": size, "legacy_heap_bytes": heap, "legacy_rows": rows, "legacy_flagged_rows": flagged}


_MERGE_TREES_SQL = """
SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree%'
"""
# Bytes on disk per table: a MergeTree's active parts (compressed columns, marks and primary index: the counterpart
# of a table with its indexes), and the others' own total (the reactions snapshot is a RocksDB key-value table).
_SIZES_SQL = """
SELECT t.name, if(t.engine LIKE '%MergeTree%', p.bytes, ifNull(t.total_bytes, 0)), p.compressed
FROM system.tables AS t
LEFT JOIN (
    SELECT table, sum(bytes_on_disk) AS bytes, sum(data_compressed_bytes) AS compressed FROM system.parts
    WHERE active AND database = currentDatabase() GROUP BY table
) AS p ON p.table = t.name
WHERE t.database = currentDatabase() AND t.engine NOT LIKE '%View%'
"""


if __name__ == "__main__":
    print(json.dumps(prepare(json.loads(sys.stdin.read()))))
