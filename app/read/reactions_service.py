"""A user's reactions on a page of images: the cache and query services
(docs/architecture.md, "The path of one read")."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

from app.caches import reactions_cache
from app.caches.reactions_cache import (
    ALL_BITS,
    BIT_OF,
    NO_VERSION,
    PAGE,
    TOO_MANY,
    BitUpdate,
    Lookup,
    ReactionSet,
)
from app.core.errors import ValidationError
from app.core.events import epoch_ms
from app.core.ids import check_id, check_ids
from app.stores.clickhouse import ClickHouse
from app.stores.errors import REDIS_DOWN, TRANSIENT_EXCEPTIONS
from app.stores.redis_store import RedisClient

log = logging.getLogger(__name__)

MAX_IMAGES_PER_READ = 1000

# From the latest-state table (sql/0003_read_aggregates.sql): the latest event of each reaction key, with its
# version as the cache writes it (``reactions_cache.version_of``), formatted by the engine.
_REACTIONS_SQL = """
SELECT entityId, metricType, isOn,
       concat(leftPad(toString(toUnixTimestamp64Milli(at)), 15, '0'), ':', toString(eventId))
FROM stateByActor FINAL
WHERE userId = {user:Int64} AND metricType IN {reactions:Array(String)} AND entityType = 'Image'
  AND entityId IN {images:Array(Int64)}
"""


def latest_reactions(ch: ClickHouse, user_id: int, image_ids: Sequence[int]) -> dict[int, list[BitUpdate]]:
    """The latest state of all four reactions of ``user_id`` on each image, with versions (latest event wins)."""
    found: dict[int, dict[int, BitUpdate]] = {int(i): {} for i in image_ids}
    params = {"user": user_id, "images": sorted(found), "reactions": sorted(m.value for m in BIT_OF)}
    for image, metric, value, version in ch.rows(_REACTIONS_SQL, params):
        found[int(image)][BIT_OF[metric]] = BitUpdate(int(image), BIT_OF[metric], int(value) > 0, str(version))
    return _all_bits(found)


def _all_bits(found: dict[int, dict[int, BitUpdate]]) -> dict[int, list[BitUpdate]]:
    """Each image's four bits, those without an event off with version ``NO_VERSION``."""
    return {
        image: [bits.get(b) or BitUpdate(image, b, False, NO_VERSION) for b in ALL_BITS]
        for image, bits in found.items()
    }


# Every image the user has a reaction event on, as ``_REACTIONS_SQL`` reads a page; at most ``{rows}`` rows (four
# per image at most), so that a heavy reactor's set is recognised as too big without reading all of it. One thread:
# a few granules of one user's range, where starting more threads costs more than they save (p50 3.8 against
# 4.7 ms, p99 6.7 against 8.2 ms on a server, 4.0 against 4.3 ms embedded: docs/benchmarks.md). The rows are not
# grouped by image in the engine: on a server that cost 3 to 4 ms more than this query, more than Python takes.
_ALL_REACTIONS_SQL = """
SELECT entityId, metricType, isOn,
       concat(leftPad(toString(toUnixTimestamp64Milli(at)), 15, '0'), ':', toString(eventId))
FROM stateByActor FINAL
WHERE userId = {user:Int64} AND metricType IN {reactions:Array(String)} AND entityType = 'Image'
LIMIT {rows:UInt64}
SETTINGS max_threads = 1
"""


def all_reactions(ch: ClickHouse, user_id: int, max_images: int) -> ReactionSet | None:
    """The latest state of every image ``user_id`` has a reaction event on, from the latest-state table, or None
    when there are more than ``max_images`` of them. An image absent from the set has no reaction."""
    if max_images <= 0:
        return None
    limit = 4 * max_images + 1
    params = {"user": user_id, "rows": limit, "reactions": sorted(m.value for m in BIT_OF)}
    rows = ch.rows(_ALL_REACTIONS_SQL, params)
    if len(rows) >= limit:
        return None
    found: dict[int, dict[int, tuple[int, str]]] = {}
    for image, metric, on, version in rows:
        found.setdefault(int(image), {})[BIT_OF[metric]] = (int(on), str(version))
    if len(found) > max_images:
        return None
    flags = {image: sum(b for b, (on, _) in bits.items() if on) for image, bits in found.items()}
    states = tuple(
        "|".join(
            [str(image), *(f"{b}|{bits[b][0]}|{bits[b][1]}" if b in bits else f"{b}|0|{NO_VERSION}" for b in ALL_BITS)]
        )
        for image, bits in found.items()
    )
    return ReactionSet(flags, states)


def states_to_json(states: dict[int, list[BitUpdate]]) -> dict[str, list[list[Any]]]:
    """``{imageId: [[bit, on, version], ...]}``: states as a read task answers them."""
    return {str(image): [[u.bit, u.on, u.version] for u in bits] for image, bits in states.items()}


def states_from_json(data: dict[str, list[list[Any]]]) -> dict[int, list[BitUpdate]]:
    return {int(i): [BitUpdate(int(i), int(b), bool(on), str(v)) for b, on, v in bits] for i, bits in data.items()}


class ReactionSource(Protocol):
    def __call__(self, user_id: int, image_ids: Sequence[int]) -> dict[int, list[BitUpdate]]: ...


class CompleteReactionSource(Protocol):
    """Every image a user has a reaction event on (``all_reactions``), or None for a user with too many."""

    def __call__(self, user_id: int) -> ReactionSet | None: ...


def flags_of(bits: Sequence[BitUpdate]) -> int:
    return sum(u.bit for u in bits if u.on)


class UserReactionCacheService:
    """``reactions:{userId}`` operations. Writes are version-merged: an older state never overwrites a newer one."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    def get_user_reactions(self, user_id: int, image_ids: Sequence[int]) -> dict[int, int | None]:
        """Cached flags per image; None where the cache does not know. Renews the TTL."""
        found = self.lookup(user_id, image_ids)
        known = found.known()
        return {image: known.get(image) for image in found.flags}

    def lookup(self, user_id: int, image_ids: Sequence[int]) -> reactions_cache.Lookup:
        """The cache's answer with what it knows about the set (complete, too big) and the drops a fill must find."""
        user_id = check_id(user_id, "user id")
        return reactions_cache.lookup(self.redis, user_id, check_ids(image_ids, "image id"))

    def set_reaction(
        self, user_id: int, image_id: int, reactions: int, *, at: datetime | None = None, event_id: str | None = None
    ) -> None:
        """Cache a full reaction state (e.g. read-your-writes right after enqueuing ``set_reaction``)."""
        user_id, image_id = check_id(user_id, "user id"), check_id(image_id, "image id")
        if not 0 <= reactions <= 15:
            raise ValidationError(f"reactions must be flags 0..15, got {reactions}")
        version = reactions_cache.version_of(epoch_ms(at or datetime.now(UTC)), event_id or str(uuid.uuid4()))
        updates = [BitUpdate(image_id, b, bool(reactions & b), version) for b in ALL_BITS]
        reactions_cache.merge(self.redis, {user_id: updates})

    def clear_reaction(self, user_id: int, image_id: int) -> None:
        """Forget one image; the next read resolves it from ClickHouse again."""
        user_id, image_id = check_id(user_id, "user id"), check_id(image_id, "image id")
        reactions_cache.forget(self.redis, user_id, image_id)

    def populate_from_clickhouse(self, user_id: int, image_ids: Sequence[int], source: ReactionSource) -> None:
        user_id = check_id(user_id, "user id")
        noted = self.lookup(user_id, []).drops
        states = source(user_id, check_ids(image_ids, "image id"))
        reactions_cache.fill(self.redis, user_id, [u for bits in states.values() for u in bits], PAGE, noted)


class CacheFills:
    """Cache fills run after the reader has its answer, on one thread of their own.

    A reactions fill is a version merge (``reactions_cache.merge``): an older state never overwrites a newer one, so
    it is as correct a moment later as it is before the answer, and the caller need not wait for it. At most
    ``limit`` fills wait; past that a fill runs in the caller, which slows readers
    down instead of letting the queue grow. A fill that fails (Redis unreachable) is dropped: the next read misses
    again. ``drain`` waits for the fills queued so far (a command-line read, before it closes its connections).
    """

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._start()
        # A forked child (a prefork worker, a preloading web server) has none of its parent's threads: it starts its
        # own.
        os.register_at_fork(after_in_child=self._start)

    def _start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-fill")
        self._slots = threading.BoundedSemaphore(self._limit)

    def submit(self, fill: Callable[[], object]) -> None:
        if not self._slots.acquire(blocking=False):
            self._run(fill, release=False)
            return
        self._pool.submit(self._run, fill, True)

    def _run(self, fill: Callable[[], object], release: bool) -> None:
        try:
            fill()
        except REDIS_DOWN as exc:
            log.warning("cache fill dropped, Redis unreachable: %s", exc)
        except Exception:  # the reader has its answer; a failed fill must not vanish without a trace
            log.exception("cache fill failed")
        finally:
            if release:
                self._slots.release()

    def drain(self) -> None:
        self._pool.submit(lambda: None).result()


FILLS = CacheFills()  # the process's fill thread, shared by every query service that defers its fills


class ReactionsResult(dict[int, int]):
    """``{imageId: flags}``; ``unavailable`` images were not cached and ClickHouse could not be reached (their 0 is
    not real); ``missed``: how many of the images the cache did not answer (a hit rate's misses)."""

    def __init__(self) -> None:
        super().__init__()
        self.unavailable: set[int] = set()
        self.missed = 0


class UserReactionQueryService:
    """Cache first; misses resolved from ClickHouse (latest event wins), cached, returned.

    With ``complete`` (``CompleteReactionSource``), the first miss of a user reads every image the user has a reaction
    event on and caches them as a complete set: from then on every image of every page is a hit (an absent image has
    no reaction) until the set expires. A user with too many reaction images, or without ``complete``, is filled page
    by page (absences cached as 0).

    Redis unreachable: everything is read from ClickHouse. ClickHouse unreachable: cached images are served, the
    others are reported in ``unavailable``. Neither raises.

    The misses are written to the cache after the answer is returned, on ``fills`` (``FILLS`` by default); with
    ``fills=None`` before it.
    """

    def __init__(
        self,
        redis: RedisClient,
        source: ReactionSource,
        fills: CacheFills | None = FILLS,
        complete: CompleteReactionSource | None = None,
    ) -> None:
        self.cache = UserReactionCacheService(redis)
        self.source = source
        self.fills = fills
        self.complete = complete

    def get_user_reactions(self, user_id: int, image_ids: Sequence[int]) -> ReactionsResult:
        ids = list(dict.fromkeys(image_ids))
        if len(ids) > MAX_IMAGES_PER_READ:
            raise ValidationError(f"at most {MAX_IMAGES_PER_READ} images per read, got {len(ids)}")
        user_id, ids = check_id(user_id, "user id"), check_ids(ids, "image id")
        out = ReactionsResult()
        try:
            seen = self.cache.lookup(user_id, ids)
            redis_up = True
        except REDIS_DOWN as exc:
            log.warning("Redis unreachable (%s): reading reactions of user %s from ClickHouse", exc, user_id)
            seen, redis_up = Lookup(dict.fromkeys(ids)), False
        found = seen.known()
        misses = seen.misses()
        out.missed = len(misses)
        if misses:
            try:
                found.update(self._resolve(user_id, misses, seen, redis_up))
            except TRANSIENT_EXCEPTIONS as exc:
                log.warning("ClickHouse unreachable (%s): %d images of user %s unknown", exc, len(misses), user_id)
                out.unavailable.update(misses)
        for i in ids:
            out[i] = found.get(i, 0)
        return out

    def _resolve(self, user_id: int, misses: list[int], seen: Lookup, redis_up: bool) -> dict[int, int]:
        """The missed images' flags from ClickHouse, and their fill queued: the user's complete set where it may be
        one, else the page's images."""
        kind = PAGE
        if self.complete is not None and redis_up and not seen.too_many:
            every = self.complete(user_id)
            if every is not None:
                complete = every  # bound for the deferred fill
                self._fill(lambda: reactions_cache.fill_set(self.cache.redis, user_id, complete, seen.drops))
                return {image: every.flags.get(image, 0) for image in misses}
            kind = TOO_MANY
        states = self.source(user_id, misses)
        if states and redis_up:
            updates = [u for bits in states.values() for u in bits]
            self._fill(lambda: reactions_cache.fill(self.cache.redis, user_id, updates, kind, seen.drops))
        return {image: flags_of(bits) for image, bits in states.items()}

    def _fill(self, fill: Callable[[], object]) -> None:
        if self.fills is None:
            with contextlib.suppress(*REDIS_DOWN):
                fill()
        else:
            self.fills.submit(fill)
