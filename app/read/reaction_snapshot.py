"""A user's reactions on a page of images on a cache miss: the reactions snapshot where it is exact, the latest-state
table for the rest (``app.jobs.reaction_snapshot``).

One round trip reads the page's rows of ``reactionSnapshot`` (a multi-get: its cost does not grow with the user's
activity), the row that names the table's generation, and the user's rows in the changelog since the job's last
slice. An image is served from the snapshot when the snapshot is complete (``ready``) and is the table the job's
state describes, and no reaction of the user on that image arrived since; an image without a row then has no
reaction event at all. The other images are read from ``stateByActor`` (``latest_reactions``), as before the
snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from app.caches.reactions_cache import ALL_BITS, NO_VERSION, BitUpdate
from app.core.errors import REDIS_DOWN
from app.jobs.reaction_snapshot import BITS, JOB, REACTIONS, SENTINEL, TABLE, table_sql
from app.jobs.report import load_state
from app.read.reactions import latest_reactions
from app.stores.runtime import Runtime

READ_SQL = f"""
SELECT 'row' AS part, userId, imageId, flags, versions FROM {TABLE}
WHERE userId IN {{users:Array(Int64)}} AND imageId IN {{images:Array(Int64)}}
UNION ALL
SELECT 'arrived', userId, entityId, 0, [toString(metricType), toString(entityType)] FROM eventArrivals
WHERE insertedAt > {{after:DateTime64(3, 'UTC')}} AND userId = {{user:Int64}}
"""  # noqa: S608
_REACTIONS = frozenset(REACTIONS)


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
    try:
        state = load_state(rt.redis, JOB)
    except REDIS_DOWN:  # the job's state is unknown: read everything from the latest-state table
        return {}, list(images)
    if not images or state.get("ready") != "1":
        return {}, list(images)
    ch = rt.clickhouse
    params = {
        "users": [SENTINEL[0], user_id],
        "images": [SENTINEL[1], *images],
        "user": user_id,
        "after": datetime.fromisoformat(state["inserted_after"]),
    }
    rows = ch.rows(table_sql(READ_SQL, ch), params)
    generation = [str(v[0]) for part, u, i, _, v in rows if part == "row" and (u, i) == SENTINEL and v]
    if generation != [state.get("generation")]:  # another table than the state's: read everything
        return {}, list(images)
    arrived = {int(r[2]) for r in rows if r[0] == "arrived" and r[4][1] == "Image" and r[4][0] in _REACTIONS}
    found = {int(i): (int(flags), versions) for part, u, i, flags, versions in rows if part == "row" and u == user_id}
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
