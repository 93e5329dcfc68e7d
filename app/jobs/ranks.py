"""``recompute_ranks``: the leaderboard built under a temporary key and swapped in with ``RENAME`` (readers see the old
board or the new one, never a part), then ``rank`` in cached hashes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

from app.caches.metrics_cache import CHUNK, set_field_if_cached
from app.core import constants as c
from app.core import keys
from app.core.metrics import SCORE_SCALE
from app.derived.job_state import JobReport
from app.stores.redis_store import run_script
from app.stores.runtime import Runtime

_SWAP_SCRIPT = """
redis.call('RENAME', KEYS[1], KEYS[3])
redis.call('RENAME', KEYS[2], KEYS[4])
redis.call('EXPIRE', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[4], ARGV[1])
return 1
"""


def ranked(scores: Mapping[int, int]) -> list[tuple[int, int, int]]:
    """(user, score, rank) for positive scores: higher score first, ties to the lower user id."""
    order = sorted(((u, s) for u, s in scores.items() if s > 0), key=lambda us: (-us[1], us[0]))
    return [(u, s, i + 1) for i, (u, s) in enumerate(order)]


def recompute_ranks(rt: Runtime) -> JobReport:
    started = time.perf_counter()
    r = rt.redis
    rows = rt.clickhouse.rows("SELECT userId, score FROM engagementCurrent FINAL")
    scores = {int(u): int(s) for u, s in rows if int(s) > 0}
    unranked = {int(u) for u, s in rows if int(s) <= 0}
    board = ranked(scores)
    board_key, ranks_key = keys.leaderboard(), keys.leaderboard_ranks()
    before = {int(str(m)) for m in r.zrange(board_key, 0, -1)}
    tmp = f"{board_key}:building:{uuid.uuid4().hex}"
    tmp_ranks = f"{tmp}:ranks"
    try:
        for i in range(0, len(board), CHUNK):
            pipe = r.pipeline(transaction=False)
            pipe.zadd(tmp, {str(u): s / SCORE_SCALE for u, s, _ in board[i : i + CHUNK]})
            pipe.hset(tmp_ranks, mapping={str(u): rank for u, _, rank in board[i : i + CHUNK]})
            pipe.expire(tmp, 600)
            pipe.expire(tmp_ranks, 600)
            pipe.execute()
        if board:
            # The board and its ranks swap together (one script: atomic; in a cluster the four keys share a slot).
            run_script(r, _SWAP_SCRIPT, [([tmp, tmp_ranks, board_key, ranks_key], [c.LEADERBOARD_TTL_S])])
        else:
            r.delete(board_key, ranks_key)
    finally:
        r.delete(tmp, tmp_ranks)
    ranks: dict[int, str] = {u: str(rank) for u, _, rank in board}
    ranks.update({u: "" for u in (before | unranked) - set(ranks)})  # no positive score: no rank
    cached = set_field_if_cached(r, "rank", ranks)
    return JobReport("recompute_ranks", users=len(board), cached_updated=cached, seconds=time.perf_counter() - started)
