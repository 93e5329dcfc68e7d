"""``user:metrics:{userId}`` hashes: whole-hash writes that never go back in time.

A writer takes a snapshot version (Redis server time) *before* it queries ClickHouse, and the write lands only
if no newer snapshot has been written for that user. Since a query started later sees every event an earlier one
saw, the newest snapshot always wins, however the writers interleave. Each write replaces the whole hash (never a
partial one), keeps the ``rank`` the rank job set, and sets the TTL on both keys. It also refreshes a longer-lived
copy (``user:metrics:last:{userId}``) that readers serve, marked stale, while ClickHouse is unreachable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from app.core import constants as c
from app.core import keys
from app.core.metrics import UserMetrics
from app.stores.redis_store import RedisClient, is_cluster, per_slot, run_script

# Many users in one call: KEYS are (hash, version, stale copy) per user; ARGV[1..3] the version and the two TTLs,
# then one string per user with the hash's fields and values joined by newlines (none contains one). One command
# with a few hundred arguments instead of a script call per user: packing the commands was most of a write's cost
# in the Python client.
_WRITE_SCRIPT = """
local written = 0
for i = 1, #ARGV - 3 do
  local hash, version, stale = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local current = redis.call('GET', version)
  if not (current and tonumber(current) >= tonumber(ARGV[1])) then
    local fields = {}
    for item in string.gmatch(ARGV[3 + i], '[^\\n]+') do fields[#fields + 1] = item end
    local rank = redis.call('HGET', hash, 'rank')
    redis.call('DEL', hash)
    redis.call('HSET', hash, unpack(fields))
    if rank and redis.call('HEXISTS', hash, 'rank') == 0 then
      redis.call('HSET', hash, 'rank', rank)
    end
    redis.call('EXPIRE', hash, ARGV[2])
    redis.call('SET', version, ARGV[1], 'EX', ARGV[2])
    if tonumber(ARGV[3]) > 0 then
      redis.call('COPY', hash, stale, 'REPLACE')
      redis.call('EXPIRE', stale, ARGV[3])
    end
    written = written + 1
  end
end
return written
"""


def metrics_key(user_id: int) -> str:
    return keys.of_user(c.USER_METRICS_KEY, user_id)


def version_key(user_id: int) -> str:
    return keys.of_user(c.USER_METRICS_VERSION_KEY, user_id)


def stale_key(user_id: int) -> str:
    return keys.of_user(c.USER_METRICS_STALE_KEY, user_id)


def write(
    r: RedisClient, version_us: int, metrics: Mapping[int, UserMetrics], stale_copy_ttl_s: int = 7 * 86_400
) -> int:
    """Write whole hashes for many users in one round trip; returns how many landed."""
    if not metrics:
        return 0
    calls = []
    for group in per_slot(r, metrics):
        names: list[str] = []
        hashes: list[str] = []
        for user_id in group:
            names += [metrics_key(user_id), version_key(user_id), stale_key(user_id)]
            hashes.append("\n".join(f"{name}\n{value}" for name, value in metrics[user_id].to_hash().items()))
        calls.append((names, [version_us, c.USER_METRICS_TTL_S, stale_copy_ttl_s, *hashes]))
    return sum(int(n) for n in run_script(r, _WRITE_SCRIPT, calls))


def read(r: RedisClient, user_ids: Iterable[int]) -> dict[int, UserMetrics | None]:
    """Cached metrics per user, None on a miss. One round trip (each hash as one string, as ``read_noting``)."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return {}
    return _read_groups(r, ids)


def _read_groups(r: RedisClient, ids: list[int]) -> dict[int, UserMetrics | None]:
    groups = per_slot(r, ids)
    replies = run_script(r, _READ_ONLY_SCRIPT, [([metrics_key(u) for u in group], []) for group in groups])
    out: dict[int, UserMetrics | None] = {}
    for group, joined in zip(groups, replies, strict=True):
        out.update(_decoded(group, joined))
    return {uid: out[uid] for uid in ids}


def _decoded(ids: list[int], joined: list[str]) -> dict[int, UserMetrics | None]:
    out: dict[int, UserMetrics | None] = {}
    for user_id, text in zip(ids, joined, strict=True):
        if text:
            pairs = text.split("\n")
            out[user_id] = UserMetrics.from_hash(dict(zip(pairs[::2], pairs[1::2], strict=True)))
        else:
            out[user_id] = None
    return out


def read_stale(r: RedisClient, user_ids: Iterable[int]) -> dict[int, UserMetrics]:
    """The last metrics written for each user that has a copy (served, marked stale, when ClickHouse is down)."""
    ids = list(dict.fromkeys(user_ids))
    pipe = r.pipeline(transaction=False)
    for user_id in ids:
        pipe.hgetall(stale_key(user_id))
    return {uid: UserMetrics.from_hash(data) for uid, data in zip(ids, pipe.execute(), strict=True) if data}


# Read many hashes, remember who was read (for the refresh job) and count hits and misses, in one round trip. Each
# hash comes back as one string (fields and values joined by newlines, none contains one): one reply element per
# user instead of two per field keeps the client's reply parsing out of the hit path.
_READ_SCRIPT = f"""
local hits = 0
local out = {{}}
for i = 3, #KEYS do
  local h = redis.call('HGETALL', KEYS[i])
  out[#out + 1] = table.concat(h, '\\n')
  if #h > 0 then hits = hits + 1 end
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i - 1])
end
redis.call('EXPIRE', KEYS[1], {c.RECENT_READS_TTL_S})
redis.call('HINCRBY', KEYS[2], 'cache_hits_total', hits)
redis.call('HINCRBY', KEYS[2], 'cache_misses_total', #KEYS - 2 - hits)
redis.call('EXPIRE', KEYS[2], {c.COUNTER_TTL_S})
return out
"""


_READ_ONLY_SCRIPT = """
local out = {}
for i = 1, #KEYS do
  out[i] = table.concat(redis.call('HGETALL', KEYS[i]), '\\n')
end
return out
"""


def read_noting(r: RedisClient, user_ids: Iterable[int], now_s: float) -> dict[int, UserMetrics | None]:
    """Like ``read``, and also records the read (``metrics:recent-reads``) and the hit/miss counters."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return {}
    if is_cluster(r):  # the hashes by slot, then the reads and the counters on their own nodes
        found = _read_groups(r, ids)
        hits = sum(1 for m in found.values() if m is not None)
        pipe = r.pipeline(transaction=False)
        pipe.zadd(c.RECENT_READS_KEY, {str(u): now_s for u in ids})
        pipe.expire(c.RECENT_READS_KEY, c.RECENT_READS_TTL_S)
        pipe.hincrby(c.COUNTER_KEY, "cache_hits_total", hits)
        pipe.hincrby(c.COUNTER_KEY, "cache_misses_total", len(ids) - hits)
        pipe.expire(c.COUNTER_KEY, c.COUNTER_TTL_S)
        pipe.execute()
        return found
    names = [c.RECENT_READS_KEY, c.COUNTER_KEY, *(metrics_key(u) for u in ids)]
    joined: list[str] = r.register_script(_READ_SCRIPT)(keys=names, args=[now_s, *ids])
    return _decoded(ids, joined)


# -- Fills in progress -------------------------------------------------------------------------------------------
# Whoever computes hashes to write (a reader filling a miss, the refresher, the re-warming job) holds the user's
# fill lock from before it takes its snapshot version until after its write. Readers that miss the same user wait
# for that result instead of querying too, and the flusher marks a user dirty while its lock is held even though no
# hash exists yet: an event that lands after the snapshot's query began is then recomputed once the stale snapshot
# is written (``app.write.refresher``).
_RELEASE_SCRIPT = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then n = n + redis.call('DEL', key) end
end
return n
"""


def fill_lock_key(user_id: int | str) -> str:
    return keys.of_user(c.USER_METRICS_FILL_LOCK_KEY, user_id)


_TAKE_SCRIPT = """
local taken = {}
for i, key in ipairs(KEYS) do
  taken[i] = redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
end
return taken
"""


def take_fill_locks(r: RedisClient, user_ids: list[int], token: str, ttl_ms: int) -> list[int]:
    """The users among ``user_ids`` whose fill lock this caller now holds (``SET NX``, expiring by itself)."""
    if not user_ids:
        return []
    groups = per_slot(r, user_ids)
    replies = run_script(r, _TAKE_SCRIPT, [([fill_lock_key(u) for u in group], [token, ttl_ms]) for group in groups])
    held = {
        uid
        for group, taken in zip(groups, replies, strict=True)
        for uid, ok in zip(group, taken, strict=True)
        if int(ok)
    }
    return [uid for uid in user_ids if uid in held]


def release_fill_locks(r: RedisClient, user_ids: list[int], token: str) -> None:
    """Release the locks ``token`` holds among ``user_ids`` (another holder's lock is left alone)."""
    calls = [([fill_lock_key(uid) for uid in group], [token]) for group in per_slot(r, user_ids)]
    run_script(r, _RELEASE_SCRIPT, calls)


# Only cached hashes are touched: a user without one gets everything on the next read anyway. Users and values come
# as two comma-joined strings (a value '' deletes the field): two arguments however many users, cheap to send.
# ARGV[3], when not '', is the writer's snapshot version: a hash whose snapshot is newer (its version key above it)
# is left alone, since it was computed from later data than the writer's (a job's score would take it back in time).
_SET_FIELD_IF_CACHED = """
local users, values = {}, {}
for u in string.gmatch(ARGV[1], '[^,]+') do users[#users + 1] = u end
for v in string.gmatch(ARGV[2] .. ',', '([^,]*),') do values[#values + 1] = v end
local n = 0
for i = 1, #users do
  local key = KEYS[1] .. users[i]
  local newer = false
  if ARGV[3] ~= '' then
    local current = redis.call('GET', KEYS[3] .. users[i])
    newer = current and tonumber(current) > tonumber(ARGV[3])
  end
  if not newer and redis.call('EXISTS', key) == 1 then
    if values[i] == '' then redis.call('HDEL', key, KEYS[2]) else redis.call('HSET', key, KEYS[2], values[i]) end
    n = n + 1
  end
end
return n
"""
_METRICS_PREFIX = c.USER_METRICS_KEY.removesuffix("{user_id}")
_VERSION_PREFIX = c.USER_METRICS_VERSION_KEY.removesuffix("{user_id}")
# Cluster mode: KEYS are the hashes then their version keys (one slot), ARGV[1] the field, ARGV[2] the snapshot
# version or '', then one value per hash.
_SET_FIELD_IF_CACHED_KEYS = """
local n = 0
local half = #KEYS / 2
for i = 1, half do
  local newer = false
  if ARGV[2] ~= '' then
    local current = redis.call('GET', KEYS[half + i])
    newer = current and tonumber(current) > tonumber(ARGV[2])
  end
  if not newer and redis.call('EXISTS', KEYS[i]) == 1 then
    local v = ARGV[i + 2]
    if v == '' then redis.call('HDEL', KEYS[i], ARGV[1]) else redis.call('HSET', KEYS[i], ARGV[1], v) end
    n = n + 1
  end
end
return n
"""
CHUNK = 5000  # users per script call


def set_field_if_cached(
    r: RedisClient, field: str, values: Mapping[int, str], snapshot_version: int | None = None
) -> int:
    """HSET ``field`` on the cached ``user:metrics`` hashes among ``values`` ('' deletes it); returns how many.
    With ``snapshot_version`` (Redis time taken before the writer queried ClickHouse, as for whole-hash writes),
    hashes written from a newer snapshot are left as they are."""
    version = "" if snapshot_version is None else str(snapshot_version)
    if is_cluster(r):  # one call per slot, each naming its users' hashes and version keys
        calls = [
            (
                [metrics_key(u) for u in group] + [version_key(u) for u in group],
                [field, version, *(values[u] for u in group)],
            )
            for group in per_slot(r, values)
        ]
        return sum(int(n) for n in run_script(r, _SET_FIELD_IF_CACHED_KEYS, calls))
    script = r.register_script(_SET_FIELD_IF_CACHED)
    items = list(values.items())
    done = 0
    for i in range(0, len(items), CHUNK):
        chunk = items[i : i + CHUNK]
        users = ",".join(str(u) for u, _ in chunk)
        done += int(
            script(keys=[_METRICS_PREFIX, field, _VERSION_PREFIX], args=[users, ",".join(v for _, v in chunk), version])
        )
    return done
