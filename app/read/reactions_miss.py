"""A user's reactions on a page of images on a cache miss: the reactions snapshot where it is exact, the latest-state
table for the rest (``app.jobs.reactions_snapshot``).

One multi-get reads, for each image of the page, the job's state row and the view's arrival mark, and the row that
says up to which changelog position the rows are exact (sql/0011). An image is served from the snapshot when that
row exists and the image's arrival mark is not later than its position; an image with neither row then has no
reaction event at all. The other images, and every image while the table has no such row, are read from
``stateByActor`` (``latest_reactions``). The cost does not depend on how many reactions the user has, and the miss
needs nothing from Redis: the snapshot is used while Redis is down too.

A user's complete set (``complete_reactions``) is one multi-get of three keys: the user's set row (user, 0), the
user's arrival mark (-user, 0) and the position row; the set row serves when the position row says the run kept set
rows and the mark is not later than its position, and ``stateByActor`` (``all_reactions``) answers otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.caches.reactions_cache import ALL_BITS, NO_VERSION, BitUpdate, ReactionSet
from app.derived.tables import BITS, REACTIONS_SENTINEL, REACTIONS_TABLE, SETS, reactions_sql
from app.read.reactions_service import all_reactions, latest_reactions
from app.stores.clickhouse import ClickHouse
from app.stores.runtime import Runtime

READ_SQL = f"""
SELECT userId, imageId, flags, versions, toUnixTimestamp64Milli(computedAt) FROM {REACTIONS_TABLE}
WHERE userId IN {{users:Array(Int64)}} AND imageId IN {{images:Array(Int64)}}
SETTINGS max_threads = 1
"""  # noqa: S608


def current_reactions(rt: Runtime, user_id: int, image_ids: Sequence[int]) -> dict[int, list[BitUpdate]]:
    """The latest state of all four reactions of ``user_id`` on each image, with versions, as ``latest_reactions``
    returns it: from the snapshot where it is exact, else from the latest-state table."""
    images = sorted(set(image_ids))
    served, rest = from_snapshot(rt, user_id, images)
    if rest:
        served.update(latest_reactions(rt.clickhouse, user_id, rest))
    return served


def from_snapshot(rt: Runtime, user_id: int, images: Sequence[int]) -> tuple[dict[int, list[BitUpdate]], list[int]]:
    """The images the snapshot serves exactly, and the others."""
    if not images:
        return {}, []
    ch = rt.clickhouse
    # The page's state rows (user, image), their marks (-user, image) and the position row (0, 0): one multi-get of
    # 3 x (1 + the page) keys (a smaller key set than marks under negative image ids would make).
    params = {"users": [REACTIONS_SENTINEL[0], user_id, -user_id], "images": [REACTIONS_SENTINEL[1], *images]}
    rows = ch.rows(reactions_sql(READ_SQL, ch), params)
    exact_until = [int(v[1]) for u, i, _, v, _ in rows if (u, i) == REACTIONS_SENTINEL and len(v) > 1]
    if not exact_until:  # no full run has finished on this table: read everything from the latest-state table
        return {}, list(images)
    arrived = {int(i) for u, i, _, _, at in rows if u == -user_id and int(at) > exact_until[0]}
    found = {int(i): (int(flags), versions) for u, i, flags, versions, _ in rows if u == user_id}
    served: dict[int, list[BitUpdate]] = {}
    rest: list[int] = []
    for image in images:
        if image in arrived:
            rest.append(image)
        elif image in found:
            flags, versions = found[image]
            by_bit = dict(zip(BITS, versions, strict=True))
            served[image] = [BitUpdate(image, b, bool(flags & b), str(by_bit[b])) for b in ALL_BITS]
        else:
            served[image] = [BitUpdate(image, b, False, NO_VERSION) for b in ALL_BITS]
    return served, rest


# Three keys on one thread: the engine's threads for a lookup cost more than they save (embedded, 800 lookups: p50
# 2.7-3.0 / p99 4.7-4.9 ms against 3.1-3.9 / 6.1-7.9 ms; docs/benchmarks.md).
SET_SQL = f"""
SELECT userId, flags, versions, toUnixTimestamp64Milli(computedAt) FROM {REACTIONS_TABLE}
WHERE userId IN {{users:Array(Int64)}} AND imageId = 0
SETTINGS max_threads = 1
"""  # noqa: S608


def complete_reactions(rt: Runtime, user_id: int, max_images: int) -> ReactionSet | None:
    """Every image ``user_id`` has a reaction event on, as ``all_reactions`` answers (None: more than
    ``max_images``): from the user's set row where it is exact, else from the latest-state table."""
    if max_images <= 0:
        return None
    exact, found = set_from_snapshot(rt.clickhouse, user_id, max_images)
    return found if exact else all_reactions(rt.clickhouse, user_id, max_images)


def set_from_snapshot(ch: ClickHouse, user_id: int, max_images: int) -> tuple[bool, ReactionSet | None]:
    """(True, the user's complete set or None for too many) when the snapshot answers exactly; (False, None) when
    the latest-state table must."""
    rows = ch.rows(reactions_sql(SET_SQL, ch), {"users": [REACTIONS_SENTINEL[0], user_id, -user_id]})
    by_user = {int(u): (int(flags), versions, int(at)) for u, flags, versions, at in rows}
    sentinel = by_user.get(REACTIONS_SENTINEL[0])
    if sentinel is None or SETS not in sentinel[1][2:]:  # no run kept the set rows: nothing here is exact
        return False, None
    mark, row = by_user.get(-user_id), by_user.get(user_id)
    if mark is not None and (mark[2] > int(sentinel[1][1]) or row is None):  # a reaction since the run's slice
        return False, None
    if row is None:  # neither row: no reaction event at all
        return True, ReactionSet({}, ())
    too_big, versions, _ = row
    if too_big:  # more images than the job's cap; the count decides for a reader's cap
        return (True, None) if int(versions[0]) > max_images else (False, None)
    states = tuple(str(v) for v in versions[1:])
    if len(states) > max_images:
        return True, None
    flags = [int(f) for f in str(versions[0]).split(",")] if states else []
    return True, ReactionSet({int(st[: st.index("|")]): f for st, f in zip(states, flags, strict=True)}, states)
