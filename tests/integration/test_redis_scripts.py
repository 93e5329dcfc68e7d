"""Scripts over many calls: one round trip, no ``SCRIPT EXISTS`` before it, and a server that lost its script cache
(restarted, ``SCRIPT FLUSH``) answers every call all the same, each applied once."""

from __future__ import annotations

from typing import Any

import redis

from app.stores.redis_store import run_script
from app.stores.runtime import Runtime

INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def test_many_calls_run_in_one_pipeline_even_after_the_script_cache_is_flushed(clean: Runtime) -> None:
    r = clean.redis
    calls = [([f"t:{i}"], [i + 1]) for i in range(3)]
    assert run_script(r, INCR_BY, calls) == [1, 2, 3]
    r.script_flush()
    assert run_script(r, INCR_BY, calls) == [2, 4, 6]  # every call ran exactly once more
    for i in range(3):
        r.delete(f"t:{i}")


def test_no_script_exists_round_trip_before_the_pipeline(clean: Runtime) -> None:
    sent: list[bytes] = []
    base: Any = clean.redis.connection_pool.connection_class

    class Recording(base):  # type: ignore[misc,valid-type]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            sent.append(b"".join(command) if isinstance(command, list) else command)
            super().send_packed_command(command, check_health)

    kwargs = dict(clean.redis.connection_pool.connection_kwargs)
    r = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=Recording, **kwargs))
    calls = [([f"t:{i}"], [1]) for i in range(2)]
    run_script(r, INCR_BY, calls)  # loaded
    sent.clear()
    assert run_script(r, INCR_BY, calls) == [2, 2]
    assert len(sent) == 1 and b"EVALSHA" in sent[0] and b"SCRIPT" not in sent[0]
    r.delete(*(f"t:{i}" for i in range(2)))
    r.close()
