"""A user's reactions on a page of images on a cache miss: the reactions snapshot where it is exact, the latest-state
table for the rest (``app.jobs.reaction_snapshot``).

One multi-get reads, for each image of the page, the job's state row, the view's arrival mark, and the row that
names the table's generation (sql/0011). An image is served from the snapshot when the snapshot is complete
(``ready``) and is the table the job's state describes, and its arrival mark is not later than the job's last slice;
an image with neither row then has no reaction event at all. The other images are read from ``stateByActor``
(``latest_reactions``), as before the snapshot. The cost does not depend on how many reactions the user has.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from app.caches.reactions_cache import ALL_BITS, NO_VERSION, BitUpdate
from app.core.errors import REDIS_DOWN
from app.jobs.reaction_snapshot import BITS, JOB, SENTINEL, TABLE, table_sql
from app.jobs.report import load_state
from app.read.reactions import latest_reactions
from app.stores.runtime import Runtime

READ_SQL = f"""
SELECT userId, imageId, flags, versions, toUnixTimestamp64Milli(computedAt) FROM {TABLE}
WHERE userId IN {{users:Array(Int64)}} AND imageId IN {{images:Array(Int64)}}
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
    try:
        state = load_state(rt.redis, JOB)
    except REDIS_DOWN:  # the job's state is unknown: read everything from the latest-state table
        return {}, list(images)
    if not images or state.get("ready") != "1":
        return {}, list(images)
    ch = rt.clickhouse
    # The page's state rows (user, image), their marks (-user, image) and the generation row (0, 0): one
    # multi-get of 3 x (1 + the page) keys (a smaller key set than marks under negative image ids would make).
    params = {"users": [SENTINEL[0], user_id, -user_id], "images": [SENTINEL[1], *images]}
    rows = ch.rows(table_sql(READ_SQL, ch), params)
    generation = [str(v[0]) for u, i, _, v, _ in rows if (u, i) == SENTINEL and v]
    if generation != [state.get("generation")]:  # another table than the state's: read everything
        return {}, list(images)
    after_ms = int(datetime.fromisoformat(state["inserted_after"]).timestamp() * 1000)
    arrived = {int(i) for u, i, _, _, at in rows if u == -user_id and int(at) > after_ms}
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
