"""``bench read``'s reactions phase: misses of active users' pages of 100 images, served from the reactions snapshot
and, in the same run, from the latest-state table without it; then hits."""

from __future__ import annotations

import gc
import random

from app.caches import reactions_cache
from app.read.reactions_miss import current_reactions
from app.read.reactions_service import FILLS, UserReactionQueryService, latest_reactions
from app.stores.runtime import Runtime
from bench.harness import Figures, put, steady, timed


def measure_reactions(rt: Runtime, f: Figures, trials: int, hit_trials: int, images: int, rnd: random.Random) -> None:
    """``reactions_miss`` (the snapshot), ``reactions_full`` (without it) and ``reactions_hit``, with the rows the
    engine read per miss where it reports them."""
    r = rt.redis
    # Reactions of active users (Zipf head) on pages of 100 images: 50 they liked, 50 drawn from all images.
    reactors = [int(u) for (u,) in rt.clickhouse.rows(_ACTIVE_REACTORS_SQL, {"n": trials})]
    reactions = UserReactionQueryService(r, lambda u, imgs: current_reactions(rt, u, imgs))
    direct = UserReactionQueryService(r, lambda u, imgs: latest_reactions(rt.clickhouse, u, imgs))
    pages = []
    for user in reactors:
        reacted = [int(i) for (i,) in rt.clickhouse.rows(_REACTED_SQL, {"user": user})]
        pages.append((user, reacted + [rnd.randint(1, images) for _ in range(100 - len(reacted))]))

    def reactions_miss(reader: UserReactionQueryService, user: int, page: list[int]) -> float:
        r.delete(reactions_cache.flags_key(user), reactions_cache.versions_key(user))  # this user's cache only
        return timed(reader.get_user_reactions, user, page)

    for key, reader in (("reactions_miss", reactions), ("reactions_full", direct)):
        for user, page in pages[:3]:  # warm-up, untimed, as for the metrics misses
            reactions_miss(reader, user, page)
        gc.collect()
        before = rt.clickhouse.read_rows
        put(f, key, [reactions_miss(reader, user, page) for user, page in pages])
        if not rt.clickhouse.embedded:
            f[key + "_rows"] = (rt.clickhouse.read_rows - before) / len(pages)
    FILLS.drain()  # the misses' fills, made after each answer, are in the cache before the hits
    rhit = steady(lambda i: reactions.get_user_reactions(*pages[i % len(pages)]), hit_trials)
    put(f, "reactions_hit", rhit)


_ACTIVE_REACTORS_SQL = """
SELECT userId FROM stateByActor
WHERE metricType = 'ReactionLike' AND userId < 1000
GROUP BY userId ORDER BY count() DESC LIMIT {n:UInt32}
"""
# 50 of the user's liked images, spread over all of them as a feed page's would be (a fixed pseudo-random sample,
# the same in every run), not the 50 lowest ids, which share a few granules of the latest-state table.
_REACTED_SQL = """
SELECT entityId FROM stateByActor WHERE userId = {user:Int64} AND metricType = 'ReactionLike'
GROUP BY entityId ORDER BY cityHash64(entityId) LIMIT 50
"""
