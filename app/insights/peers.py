"""The peers snapshot: creators' metric values and their distribution, kept by ``recompute_peers`` in Redis.

Every key starts with the hash tag ``{peers}`` (one slot: a script may read them all, also on a Redis Cluster).
Each run writes a new generation ``G`` (a random id) beside the one readers use, then switches the pointer:

- ``{peers}:current``: ``G|asOf ms``, the generation readers use and the instant it is exact for;
- ``{peers}:g:G:meta``: hash: ``asOf`` (ms), ``creators``, ``users``, ``keys`` (every key of the generation, JSON);
- ``{peers}:g:G:v``: hash, user id -> ``creator|band|followerCount|engagementScore|reactionCount|downloadCount|
  followerGrowth30d`` (``creator`` 1 or 0; the score in units of 1/10,000), for every creator and every other user
  with a value that is not 0 (a user absent from it has zeros: the job computed everyone who could have one);
- ``{peers}:g:G:z:METRIC``: sorted set, creator -> value (integers, so equal values compare equal);
- ``{peers}:g:G:z:METRIC:BAND``: the same for the creators whose followerCount is in BAND.

One script (``READ_SCRIPT``) answers a read: it follows the pointer, takes the user's values and counts, per metric,
the creators below and equal overall and in the user's band (``ZCOUNT``, logarithmic), with the populations
(``ZCARD``). The switch (``SWITCH_SCRIPT``) gives the generation's keys and the pointer one expiry instant, a few
intervals ahead, so the pointer never outlives the keys it names; a generation older than the pointer's is not
switched to (two runs racing). The replaced generation is unlinked after the switch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.core import constants as c
from app.core.errors import TransientError
from app.core.metrics import SCORE_SCALE
from app.stores.errors import REDIS_DOWN
from app.stores.redis_store import RedisClient, run_script
from app.stores.runtime import Runtime

METRICS = ("followerCount", "engagementScore", "reactionCount", "downloadCount", "followerGrowth30d")
POINTER_KEY = f"{c.PEERS_KEY_PREFIX}:current"
GENERATION_PREFIX = f"{c.PEERS_KEY_PREFIX}:g:"
NO_VALUES = "0|0|" + "|".join("0" for _ in METRICS)


def generation_key(generation: str, part: str) -> str:
    """A key of generation ``generation``: ``meta``, ``v``, ``z:METRIC`` or ``z:METRIC:BAND``."""
    return f"{GENERATION_PREFIX}{generation}:{part}"


def band(follower_count: int) -> str:
    """The follower band of a count: "0", "1-9", "10-99", "100-999", ..."""
    if follower_count <= 0:
        return "0"
    low = 10 ** (len(str(follower_count)) - 1)
    return f"{low}-{low * 10 - 1}"


def percentile(below: int, equal: int, population: int) -> float:
    return round(100 * (below + equal / 2) / population, 2) if population else 0.0


# KEYS[1]: the pointer. ARGV: the user id, the generations' key prefix, the metric names (in the values' order).
# Returns false when no generation is current; else the pointer, the user's values, then per metric: below, equal,
# population overall, then the same within the user's band (``equal`` counts the user when it is a creator).
READ_SCRIPT = """
local ptr = redis.call('GET', KEYS[1])
if not ptr then return false end
local gen = string.sub(ptr, 1, string.find(ptr, '|', 1, true) - 1)
local base = ARGV[2] .. gen .. ':'
if redis.call('EXISTS', base .. 'meta') == 0 then return false end
local raw = redis.call('HGET', base .. 'v', ARGV[1]) or ARGV[3]
local parts = {}
for p in string.gmatch(raw, '[^|]+') do parts[#parts + 1] = p end
local out = {ptr, raw}
for i = 4, #ARGV do
  local v = parts[i - 1]
  local z = base .. 'z:' .. ARGV[i]
  local zb = z .. ':' .. parts[2]
  out[#out + 1] = redis.call('ZCOUNT', z, '-inf', '(' .. v)
  out[#out + 1] = redis.call('ZCOUNT', z, v, v)
  out[#out + 1] = redis.call('ZCARD', z)
  out[#out + 1] = redis.call('ZCOUNT', zb, '-inf', '(' .. v)
  out[#out + 1] = redis.call('ZCOUNT', zb, v, v)
  out[#out + 1] = redis.call('ZCARD', zb)
end
return out
"""

# KEYS[1]: the pointer, KEYS[2..]: the new generation's keys. ARGV: the new pointer value, its asOf (ms), the expiry
# instant (ms). Switches unless the current generation is newer; returns {1 or 0, the pointer before ('' if none)}.
SWITCH_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local at = tonumber(string.sub(cur, string.find(cur, '|', 1, true) + 1))
  if at > tonumber(ARGV[2]) then return {0, cur} end
end
for i = 2, #KEYS do redis.call('PEXPIREAT', KEYS[i], ARGV[3]) end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[3])
return {1, cur or ''}
"""


def encode(creator: bool, values: tuple[int, ...]) -> str:
    """A user's entry in ``v``: the creator flag, the band, the values in ``METRICS`` order."""
    return "|".join([str(int(creator)), band(values[0]), *(str(v) for v in values)])


def pointer(generation: str, as_of: datetime) -> str:
    return f"{generation}|{_ms(as_of)}"


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def switch(r: RedisClient, generation: str, keys: list[str], as_of: datetime, expire_at: datetime) -> tuple[bool, str]:
    """Make ``generation`` current (unless a newer one is); returns whether it did, and the pointer it replaced."""
    args = [pointer(generation, as_of), _ms(as_of), _ms(expire_at)]
    (reply,) = run_script(r, SWITCH_SCRIPT, [([POINTER_KEY, *keys], args)])
    return bool(int(reply[0])), str(reply[1])


def read_peers(rt: Runtime, user_id: int) -> dict[str, Any]:
    """``insights peers USER``: the user's values and percentiles among creators, as of the last run.

    Before any run (or once the last one expired) the answer has ``asOf`` null, ``band`` null, every value null and
    every population 0."""
    try:
        args = [user_id, GENERATION_PREFIX, NO_VALUES, *METRICS]
        (reply,) = run_script(rt.redis, READ_SCRIPT, [([POINTER_KEY], args)])
    except REDIS_DOWN as exc:
        raise TransientError(f"peers: Redis is unreachable ({exc})") from exc
    if not reply:
        return _no_run(user_id)
    ptr, raw, counts = str(reply[0]), str(reply[1]).split("|"), [int(x) for x in reply[2:]]
    creator, user_band = raw[0] == "1", raw[1]
    as_of = datetime.fromtimestamp(int(ptr.split("|")[1]) / 1000, UTC)
    out: dict[str, Any] = {}
    for i, name in enumerate(METRICS):
        below, equal, population, band_below, band_equal, band_population = counts[6 * i : 6 * i + 6]
        value = int(raw[2 + i])
        if creator:  # "equal" counts the others
            equal, band_equal = equal - 1, band_equal - 1
        out[name] = {
            "value": value / SCORE_SCALE if name == "engagementScore" else value,
            "below": below,
            "equal": equal,
            "population": population,
            "percentile": percentile(below, equal, population),
            "band": {
                "below": band_below,
                "equal": band_equal,
                "population": band_population,
                "percentile": percentile(band_below, band_equal, band_population),
            },
        }
    return {"userId": user_id, "asOf": as_of.isoformat(timespec="milliseconds"), "band": user_band, "metrics": out}


def _no_run(user_id: int) -> dict[str, Any]:
    empty = {"below": 0, "equal": 0, "population": 0, "percentile": 0.0}
    metrics = {name: {"value": None, **empty, "band": dict(empty)} for name in METRICS}
    return {"userId": user_id, "asOf": None, "band": None, "metrics": metrics}
