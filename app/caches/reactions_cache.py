"""``reactions:{userId}``: a user's reactions per image as bit flags, never overwritten by an older event.

Layout (docs/architecture.md, "Redis keys"):
hash field ``{imageId}`` → flags (Like=1, Heart=2, Laugh=4, Cry=8; 0 = known: no
reaction). Beside it, ``reactions:v:{userId}`` keeps for each ``{imageId}:{bit}`` the version of the event that
set that bit: ``<createdAt ms, 15 digits>:<eventId>``, which sorts exactly like ClickHouse's
``(createdAt, toString(eventId))``. A Lua script merges updates bit by bit, keeping the newer version, so events
applied in any order, twice, or racing a fill from ClickHouse, converge on the latest state. An image that is not
cached is only written when all four bits are known (a full ``set_reaction`` state or a fill), never guessed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from app.core import constants as c
from app.core import keys
from app.core.events import REACTION_TYPES, Event, MetricType, epoch_ms
from app.stores.redis_store import RedisClient, run_script

BIT_OF: dict[MetricType, int] = {metric: int(flag) for flag, metric in REACTION_TYPES.items()}
ALL_BITS = tuple(BIT_OF.values())
NO_VERSION = "0"

# ARGV[1] the TTL, then one string per image: "image|bit|on|version|bit|on|version..." (one argument per image
# instead of three per bit: fewer arguments for the Python client to pack). The current flags and versions are read
# with one HMGET each and the changes written with one HSET each (not one call per field). A bit never set by any
# event (version "0") leaves no version behind: an absent version
# already sorts below every other.
_MERGE_SCRIPT = """
local ttl = ARGV[1]
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
for a = 2, #ARGV do
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
local currents = fetch(KEYS[1], images)
local olds = fetch(KEYS[2], fields)
local flags_out, versions_out = {}, {}
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
  -- An uncached image is written only from a complete state (all four bits newer than anything known).
  if newer > 0 and (current or newer == 4) then
    flags_out[#flags_out + 1] = images[j]
    flags_out[#flags_out + 1] = flags
    for _, v in ipairs(versions) do versions_out[#versions_out + 1] = v end
  end
end
if #flags_out > 0 then
  each('HSET', KEYS[1], flags_out)
  if #versions_out > 0 then each('HSET', KEYS[2], versions_out) end
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return #flags_out / 2
"""


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


def merge(r: RedisClient, updates_by_user: Mapping[int, Sequence[BitUpdate]]) -> int:
    """Apply bit updates for many users in one round trip; returns how many image fields changed."""
    if not updates_by_user:
        return 0
    calls = []
    for user_id, updates in updates_by_user.items():
        by_image: dict[int, list[BitUpdate]] = defaultdict(list)
        for u in updates:
            by_image[u.image_id].append(u)
        args: list[str | int] = [c.REACTIONS_TTL_S]
        for image_id, bits in by_image.items():
            # Within one call, keep only the newest update per bit.
            newest: dict[int, BitUpdate] = {}
            for u in bits:
                if u.bit not in newest or u.version > newest[u.bit].version:
                    newest[u.bit] = u
            args.append(
                "|".join([str(image_id), *(f"{u.bit}|{1 if u.on else 0}|{u.version}" for u in newest.values())])
            )
        calls.append(([flags_key(user_id), versions_key(user_id)], args))
    return sum(int(x) for x in run_script(r, _MERGE_SCRIPT, calls))


def read(r: RedisClient, user_id: int, image_ids: Sequence[int]) -> dict[int, int | None]:
    """Cached flags per image (None = not cached), renewing the TTL of a user's reactions on every read."""
    pipe = r.pipeline(transaction=False)
    pipe.hmget(flags_key(user_id), [str(i) for i in image_ids])
    pipe.expire(flags_key(user_id), c.REACTIONS_TTL_S)
    pipe.expire(versions_key(user_id), c.REACTIONS_TTL_S)
    values, *_ = pipe.execute()
    return {image: (int(v) if v is not None else None) for image, v in zip(image_ids, values, strict=True)}


def forget(r: RedisClient, user_id: int, image_id: int) -> None:
    """Drop one image from the cache (flags and versions); the next read refills it from ClickHouse."""
    pipe = r.pipeline(transaction=True)
    pipe.hdel(flags_key(user_id), str(image_id))
    pipe.hdel(versions_key(user_id), *(f"{image_id}:{b}" for b in ALL_BITS))
    pipe.execute()
