"""What every job shares: its report, its state between runs (Redis), and one clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from app.core import constants as c
from app.stores.redis_store import RedisClient, server_time_us
from app.stores.runtime import Runtime


@dataclass
class JobReport:
    job: str
    mode: str = ""
    users: int = 0  # users computed / ranked / refreshed / compared
    changed: int = 0  # scores changed / hashes repaired
    cached_updated: int = 0
    drift_ratio: float = 0.0
    seconds: float = 0.0
    announced: int = 0  # achievements put on their stream

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def now(rt: Runtime) -> datetime:
    """The jobs' clock: Redis's, one for every worker (or the one a test injected). It may step back; nothing that
    decides which stored row wins uses it alone (see the engagement job's stamps)."""
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
