"""``reactions:{userId}``: a user's reactions per image as bit flags, never overwritten by an older event.

Layout (docs/architecture.md, "Redis keys"):
hash field ``{imageId}`` → flags (Like=1, Heart=2, Laugh=4, Cry=8; 0 = known: no
reaction). Beside it, ``reactions:v:{userId}`` keeps for each ``{imageId}:{bit}`` the version of the event that
set that bit: ``<createdAt ms, 15 digits>:<eventId>``, which sorts exactly like ClickHouse's
``(createdAt, toString(eventId))``. A Lua script merges updates bit by bit, keeping the newer version, so events
applied in any order, twice, or racing a fill from ClickHouse, converge on the latest state. An image that is not
cached is only written when all four bits are known (a full ``set_reaction`` state or a fill), never guessed.

A complete set. A fill may hold every image the user has a reaction event on (``fill(..., COMPLETE)``); the versions
key then says so in its field ``all``, and an image absent from the hash is known: no reaction. Events then write
absent images from that known zero. The mark is ``1`` while the hash exists (a hash evicted on its own takes the
set's completeness with it), ``e`` for a set that was empty when filled, ``x`` for a user with more reaction images
than a complete set may hold (pages are filled image by image, and the mark keeps later misses from asking again).

Fills never lose a racing event. An event for an uncached image that the script cannot write (one bit of it, on a
set not complete) counts a drop in the versions key's field ``drops``; a reader notes that count before it reads
ClickHouse, and its fill is written only if the count is still the same: otherwise an event may have reached
ClickHouse after the fill's read and been dropped here, and the fill, which would hide it, is skipped (the next read
misses again). Every field of the versions key expires with the hash.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.core import constants as c
from app.core import keys
from app.core.events import REACTION_TYPES, Event, MetricType, epoch_ms
from app.stores.redis_store import RedisClient, run_script

BIT_OF: dict[MetricType, int] = {metric: int(flag) for flag, metric in REACTION_TYPES.items()}
ALL_BITS = tuple(BIT_OF.values())
NO_VERSION = "0"

# ARGV[1] the TTL; ARGV[2] "-" for events, or a fill: "<kind>:<drops noted by its reader>" with kind ``page``,
# ``all`` (a complete set) or ``many`` (pages only, mark it); then one string per image:
# "image|bit|on|version|bit|on|version..." (one argument per image instead of three per bit: fewer arguments for the
# Python client to pack). The current flags and versions are read with one HMGET each and the changes written with
# one HSET each (not one call per field). A bit never set by any event (version "0") leaves no version behind: an
# absent version already sorts below every other. Returns the image fields written, or -1 for a fill skipped.
_MERGE_SCRIPT = """
local ttl, mode = ARGV[1], ARGV[2]
local function each(cmd, key, args)
  for i = 1, #args, 4000 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 3999, #args)))
  end
end
local function fetch(key, fields)
  local out = {}
  for i = 1, #fields, 4000 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 3999, #fields)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end
local images, updates, fields = {}, {}, {}
for a = 3, #ARGV do
  local parts = {}
  for item in string.gmatch(ARGV[a], '[^|]+') do parts[#parts + 1] = item end
  local list = {}
  for i = 2, #parts, 3 do
    list[#list + 1] = {tonumber(parts[i]), parts[i + 1] == '1', parts[i + 2]}
    fields[#fields + 1] = parts[1] .. ':' .. parts[i]
  end
  images[#images + 1] = parts[1]
  updates[#updates + 1] = list
end
-- The set's mark and drop count come with the versions, in the same HMGET.
local n = #fields
fields[n + 1], fields[n + 2] = 'all', 'drops'
local olds = fetch(KEYS[2], fields)
local mark = olds[n + 1]
local kind, noted = string.match(mode, '^(%a+):(.*)$')
if kind and noted ~= (olds[n + 2] or '') then return -1 end
local currents = fetch(KEYS[1], images)
local complete
local function is_complete()  -- asked only for an uncached image that one event cannot write on its own
  if complete == nil then
    complete = mark == 'e' or (mark == '1' and redis.call('EXISTS', KEYS[1]) == 1)
  end
  return complete
end
local flags_out, versions_out = {}, {}
local dropped = 0
local k = 0
for j = 1, #images do
  local current = currents[j]
  local flags = tonumber(current or '0')
  local newer = 0
  local versions = {}
  for _, u in ipairs(updates[j]) do
    k = k + 1
    local old = olds[k]
    if (not old) or u[3] > old then
      newer = newer + 1
      if u[2] then flags = bit.bor(flags, u[1]) else flags = bit.band(flags, bit.bnot(u[1])) end
      if u[3] ~= '0' then
        versions[#versions + 1] = fields[k]
        versions[#versions + 1] = u[3]
      end
    end
  end
  -- An uncached image is written only from a known state: all four bits newer than anything known, or a complete
  -- set's zero.
  if newer > 0 and (current or newer == 4 or is_complete()) then
    flags_out[#flags_out + 1] = images[j]
    flags_out[#flags_out + 1] = flags
    for _, v in ipairs(versions) do versions_out[#versions_out + 1] = v end
  elseif newer > 0 and not current then
    dropped = dropped + 1
  end
end
if #flags_out > 0 then
  each('HSET', KEYS[1], flags_out)
  if #versions_out > 0 then each('HSET', KEYS[2], versions_out) end
  if mark == 'e' then redis.call('HSET', KEYS[2], 'all', '1') end
end
if dropped > 0 then redis.call('HINCRBY', KEYS[2], 'drops', 1) end
if kind == 'all' then
  redis.call('HSET', KEYS[2], 'all', redis.call('EXISTS', KEYS[1]) == 1 and '1' or 'e')
elseif kind == 'many' then
  redis.call('HSET', KEYS[2], 'all', 'x')
end
if #flags_out > 0 or dropped > 0 or kind then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return #flags_out / 2
"""

# Fill kinds (``fill``): the images of a page, a complete set, or the images of a page of a user whose reaction
# images are too many for a complete set.
PAGE, COMPLETE, TOO_MANY = "page", "all", "many"
_EVENTS = "-"
_MARK, _DROPS = "all", "drops"


def flags_key(user_id: int) -> str:
    return keys.of_user(c.REACTIONS_KEY, user_id)


def versions_key(user_id: int) -> str:
    return keys.of_user(c.REACTIONS_VERSION_KEY, user_id)


def version_of(created_at_ms: int, event_id: str) -> str:
    return f"{created_at_ms:015d}:{event_id}"


@dataclass(frozen=True, slots=True)
class BitUpdate:
    image_id: int
    bit: int
    on: bool
    version: str


def updates_from_events(events: Iterable[Event]) -> dict[int, list[BitUpdate]]:
    """Reaction events grouped by user, as bit updates."""
    out: dict[int, list[BitUpdate]] = defaultdict(list)
    for e in events:
        b = BIT_OF.get(e.metric_type)
        if b is None or e.entity_type != "Image":
            continue
        out[e.user_id].append(BitUpdate(e.entity_id, b, e.is_on, version_of(epoch_ms(e.created_at), str(e.event_id))))
    return out


def _image_args(updates: Iterable[BitUpdate]) -> list[str]:
    """One merge-script argument per image (``image|bit|on|version|...``), the newest update per bit."""
    by_image: dict[int, dict[int, BitUpdate]] = defaultdict(dict)
    for u in updates:
        newest = by_image[u.image_id]
        if u.bit not in newest or u.version > newest[u.bit].version:
            newest[u.bit] = u
    return [
        "|".join([str(image_id), *(f"{u.bit}|{1 if u.on else 0}|{u.version}" for u in newest.values())])
        for image_id, newest in by_image.items()
    ]


def _args(mode: str, updates: Sequence[BitUpdate]) -> list[str | int]:
    return [c.REACTIONS_TTL_S, mode, *_image_args(updates)]


@dataclass(frozen=True, slots=True)
class ReactionSet:
    """A user's complete set as a reader answers from it and a fill writes it: the flags of every image the user has
    a reaction event on (an image absent has none), and per image the merge script's argument with all four bits
    (``image|bit|on|version|...``, version ``NO_VERSION`` for a bit no event set). The reactions snapshot's set rows
    hold the arguments as the engine formatted them (``app.jobs.reactions_snapshot``), so that neither a reader, the
    read channel nor the fill builds an object per bit: at 1,000 images that was about 30 ms of Python in a miss."""

    flags: dict[int, int]
    states: tuple[str, ...]

    @classmethod
    def of(cls, states: Mapping[int, Sequence[BitUpdate]]) -> ReactionSet:
        """The set of every bit of each image (``latest_reactions``' shape)."""
        flags = {image: sum(u.bit for u in bits if u.on) for image, bits in states.items()}
        return cls(flags, tuple(_image_args(u for bits in states.values() for u in bits)))

    def to_json(self) -> dict[str, list[Any]]:
        return {"images": list(self.flags), "flags": list(self.flags.values()), "states": list(self.states)}

    @classmethod
    def from_json(cls, data: Mapping[str, Sequence[Any]]) -> ReactionSet:
        """``to_json``'s form, or the bits per image an earlier version's worker answers with (``{imageId: [[bit,
        on, version], ...]}``), so that readers can be upgraded before the workers."""
        if "states" not in data:
            return cls.of(
                {int(i): [BitUpdate(int(i), int(b), bool(on), str(v)) for b, on, v in bits] for i, bits in data.items()}
            )
        flags = dict(zip(map(int, data["images"]), map(int, data["flags"]), strict=True))
        return cls(flags, tuple(map(str, data["states"])))


def _keys(user_id: int) -> list[str]:
    return [flags_key(user_id), versions_key(user_id)]


def merge(r: RedisClient, updates_by_user: Mapping[int, Sequence[BitUpdate]]) -> int:
    """Apply events' bit updates for many users in one round trip; returns how many image fields changed."""
    calls = [(_keys(user_id), _args(_EVENTS, updates)) for user_id, updates in updates_by_user.items()]
    return sum(int(x) for x in run_script(r, _MERGE_SCRIPT, calls))


def fill(r: RedisClient, user_id: int, updates: Sequence[BitUpdate], kind: str, noted_drops: str) -> int:
    """Write a fill from ClickHouse (every bit of each image it holds; ``kind`` PAGE, COMPLETE or TOO_MANY), unless
    an event was dropped since its reader noted ``noted_drops`` (``Lookup.drops``): then nothing is written and -1
    returned. Otherwise the image fields written."""
    (written,) = run_script(r, _MERGE_SCRIPT, [(_keys(user_id), _args(f"{kind}:{noted_drops}", updates))])
    return int(written)


def fill_set(r: RedisClient, user_id: int, complete: ReactionSet, noted_drops: str) -> int:
    """``fill`` of a complete set."""
    args = [c.REACTIONS_TTL_S, f"{COMPLETE}:{noted_drops}", *complete.states]
    (written,) = run_script(r, _MERGE_SCRIPT, [(_keys(user_id), args)])
    return int(written)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the cache holds for a page: flags per image (None = not cached), whether the set is complete (then an
    absent image has no reaction), whether it is too big to be, and the drop count a fill must still find."""

    flags: dict[int, int | None]
    complete: bool = False
    too_many: bool = False
    drops: str = ""

    def known(self) -> dict[int, int]:
        """The flags the cache answers for (every image, for a complete set)."""
        if self.complete:
            return {image: flags or 0 for image, flags in self.flags.items()}
        return {image: flags for image, flags in self.flags.items() if flags is not None}

    def misses(self) -> list[int]:
        return [] if self.complete else [image for image, flags in self.flags.items() if flags is None]


def lookup(r: RedisClient, user_id: int, image_ids: Sequence[int]) -> Lookup:
    """The cache's answer for a page, in one round trip, renewing the TTL of a user's reactions."""
    pipe = r.pipeline(transaction=False)
    pipe.hmget(flags_key(user_id), [str(i) for i in image_ids] or [_MARK])  # HMGET needs a field: a page of none
    pipe.hmget(versions_key(user_id), [_MARK, _DROPS])
    pipe.exists(flags_key(user_id))
    pipe.expire(flags_key(user_id), c.REACTIONS_TTL_S)
    pipe.expire(versions_key(user_id), c.REACTIONS_TTL_S)
    values, (mark, drops), exists, *_ = pipe.execute()
    values = values[: len(image_ids)]  # a page of none asked for one field
    flags = {image: (int(v) if v is not None else None) for image, v in zip(image_ids, values, strict=True)}
    complete = mark == "e" or (mark == "1" and bool(exists))
    return Lookup(flags, complete=complete, too_many=mark == "x", drops=drops or "")


def read(r: RedisClient, user_id: int, image_ids: Sequence[int]) -> dict[int, int | None]:
    """Cached flags per image (None = not cached), renewing the TTL of a user's reactions on every read."""
    return lookup(r, user_id, image_ids).flags


def forget(r: RedisClient, user_id: int, image_id: int) -> None:
    """Drop one image from the cache (flags and versions) and the set's completeness; the next read refills it from
    ClickHouse."""
    pipe = r.pipeline(transaction=True)
    pipe.hdel(flags_key(user_id), str(image_id))
    pipe.hdel(versions_key(user_id), _MARK, *(f"{image_id}:{b}" for b in ALL_BITS))
    pipe.execute()
