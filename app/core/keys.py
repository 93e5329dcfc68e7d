"""Redis key names, for standalone Redis and for Redis Cluster.

Standalone (``REDIS_URL`` ``redis://`` or ``rediss://``): the contract names of ``app.core.constants``, e.g.
``user:metrics:42`` and ``reactions:42``.

Redis Cluster (``REDIS_URL`` ``redis+cluster://`` or ``rediss+cluster://``): a script may only touch keys of one
hash slot, so every key of one user carries the user id as its hash tag and lands in that user's slot:
``user:metrics:{42}``, ``user:metrics:v:{42}``, ``user:metrics:last:{42}``, ``lock:fill:metrics:{42}``,
``reactions:{42}``, ``reactions:v:{42}``. The leaderboard and its ranks, swapped together in one transaction, share
the tag ``{leaderboard:engagement}``: ``{leaderboard:engagement}`` and ``{leaderboard:engagement}:ranks``. Other
keys are single-key and keep their names. The mode is the process's: the Redis connection sets it
(``app.stores.redis_store.connect``).
"""

from __future__ import annotations

from app.core import constants as c

_cluster = False


def use_cluster(on: bool) -> None:
    global _cluster
    _cluster = on


def in_cluster() -> bool:
    return _cluster


def of_user(template: str, user_id: int | str) -> str:
    """``template`` (a ``{user_id}`` constant) for one user: the id as the hash tag in cluster mode."""
    return template.format(user_id=f"{{{user_id}}}" if _cluster else user_id)


def leaderboard() -> str:
    return f"{{{c.LEADERBOARD_KEY}}}" if _cluster else c.LEADERBOARD_KEY


def leaderboard_ranks() -> str:
    return f"{leaderboard()}{c.LEADERBOARD_RANKS_KEY.removeprefix(c.LEADERBOARD_KEY)}"


def user_slot(user_id: int | str) -> int:
    """The cluster slot of every key of one user (CRC16 of its hash tag, modulo 16384)."""
    from redis.crc import key_slot

    return int(key_slot(str(user_id).encode()))
