"""What every job shares: its report, its state between runs (Redis), one clock, and cached-field updates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from app.core import constants as c
from app.core import keys
from app.stores.redis_store import RedisClient, is_cluster, per_slot, run_script, server_time_us
from app.stores.runtime import Runtime

# Only cached hashes are touched: a user without one gets everything on the next read anyway. Users and values come
# as two comma-joined strings (a value '' deletes the field): two arguments however many users, cheap to send.
_SET_FIELD_IF_CACHED = """
local users, values = {}, {}
for u in string.gmatch(ARGV[1], '[^,]+') do users[#users + 1] = u end
for v in string.gmatch(ARGV[2] .. ',', '([^,]*),') do values[#values + 1] = v end
local n = 0
for i = 1, #users do
  local key = KEYS[1] .. users[i]
  if redis.call('EXISTS', key) == 1 then
    if values[i] == '' then redis.call('HDEL', key, KEYS[2]) else redis.call('HSET', key, KEYS[2], values[i]) end
    n = n + 1
  end
end
return n
"""
_METRICS_PREFIX = c.USER_METRICS_KEY.removesuffix("{user_id}")
# Cluster mode: KEYS are the hashes (one slot), ARGV[1] the field, then one value per hash.
_SET_FIELD_IF_CACHED_KEYS = """
local n = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local v = ARGV[i + 1]
    if v == '' then redis.call('HDEL', KEYS[i], ARGV[1]) else redis.call('HSET', KEYS[i], ARGV[1], v) end
    n = n + 1
  end
end
return n
"""
CHUNK = 5000


@dataclass
class JobReport:
    job: str
    mode: str = ""
    users: int = 0  # users computed / ranked / refreshed / compared
    changed: int = 0  # scores changed / hashes repaired
    cached_updated: int = 0
    drift_ratio: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def now(rt: Runtime) -> datetime:
    """The jobs' clock: Redis's, one for every worker (or the one a test injected). It may step back; nothing that
    decides which stored row wins uses it alone (see ``app.jobs.engagement`` stamps)."""
    if rt.clock is not None:
        return rt.clock()
    return datetime.fromtimestamp(server_time_us(rt.redis) / 1e6, UTC)


def load_state(r: RedisClient, job: str) -> dict[str, str]:
    raw: Any = r.hgetall(c.JOB_STATE_KEY.format(job=job))
    return {str(k): str(v) for k, v in raw.items()}


def save_state(r: RedisClient, job: str, state: Mapping[str, str | int | float]) -> None:
    key = c.JOB_STATE_KEY.format(job=job)
    pipe = r.pipeline(transaction=False)
    pipe.hset(key, mapping={k: str(v) for k, v in state.items()})
    pipe.expire(key, c.JOB_STATE_TTL_S)
    pipe.execute()


def set_field_if_cached(r: RedisClient, field: str, values: Mapping[int, str]) -> int:
    """HSET ``field`` on the cached ``user:metrics`` hashes among ``values`` ('' deletes it); returns how many."""
    if is_cluster(r):  # one call per slot, each naming its users' hashes
        calls = [
            ([keys.of_user(c.USER_METRICS_KEY, u) for u in group], [field, *(values[u] for u in group)])
            for group in per_slot(r, values)
        ]
        return sum(int(n) for n in run_script(r, _SET_FIELD_IF_CACHED_KEYS, calls))
    script = r.register_script(_SET_FIELD_IF_CACHED)
    items = list(values.items())
    done = 0
    for i in range(0, len(items), CHUNK):
        chunk = items[i : i + CHUNK]
        users = ",".join(str(u) for u, _ in chunk)
        done += int(script(keys=[_METRICS_PREFIX, field], args=[users, ",".join(v for _, v in chunk)]))
    return done
