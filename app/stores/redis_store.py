"""Redis adapter: client construction (standalone or Redis Cluster) and running one script over many users.

In cluster mode a script may only touch keys of one slot: ``per_slot`` splits a set of users into the groups whose
keys share a slot (``app.core.keys``), and ``run_script`` runs a script once per group, all groups in one
pipeline (one round trip per node). Standalone Redis takes every user in one call, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import redis

from app.core import keys
from app.core.settings import Settings

if TYPE_CHECKING:
    from redis.cluster import RedisCluster

RedisClient = redis.Redis
T = TypeVar("T", int, str)

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def connect(url: str, settings: Settings) -> RedisClient:
    if is_cluster_url(url):
        keys.use_cluster(True)
        return cast(RedisClient, connect_cluster(url, settings.redis_timeout_s))
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
    )


def connect_cluster(url: str, timeout_s: float) -> RedisCluster:
    """A ``RedisCluster`` client for a ``redis+cluster://`` (or ``rediss+cluster://``) URL."""
    from redis.backoff import ExponentialBackoff
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    plain = url.replace("+cluster://", "://", 1)
    return RedisCluster.from_url(
        plain,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=8),  # rides through a failover
    )


def is_cluster(r: Any) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(r, RedisCluster)


def per_slot(r: RedisClient, user_ids: Iterable[T]) -> list[list[T]]:
    """``user_ids`` in groups whose keys share a slot: one group on standalone Redis."""
    ids = list(user_ids)
    if not is_cluster(r):
        return [ids] if ids else []
    groups: dict[int, list[T]] = {}
    for uid in ids:
        groups.setdefault(keys.user_slot(uid), []).append(uid)
    return list(groups.values())


def run_script(r: RedisClient, script: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
    """``script`` once per ``(keys, args)`` call, in one round trip (one per node in a cluster); the replies in
    order. In a cluster each call's keys must share a slot; the script text is sent (``EVAL``), so a node that
    never saw it, or a replica promoted after a failover, runs it all the same."""
    if not calls:
        return []
    if not is_cluster(r):
        registered = r.register_script(script)
        if len(calls) == 1:
            return [registered(keys=list(calls[0][0]), args=list(calls[0][1]))]
        return _evalsha_pipeline(r, registered.sha, script, calls)
    pipe = r.pipeline(transaction=False)
    for call_keys, args in calls:
        cast(Any, pipe).execute_command("EVAL", script, len(call_keys), *call_keys, *args)
    return list(pipe.execute())


def _evalsha_pipeline(
    r: RedisClient, sha: str, script: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
) -> list[Any]:
    """The calls as ``EVALSHA`` in one pipeline. A pipeline of ``Script`` objects would first ask ``SCRIPT EXISTS``
    (a round trip of its own, every time); instead, a server that does not know the script (restarted, flushed)
    answers those calls ``NOSCRIPT``, which ran nothing: the script is loaded and only they are sent again."""

    def send(batch: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
        pipe = r.pipeline(transaction=False)
        for call_keys, args in batch:
            cast(Any, pipe).execute_command("EVALSHA", sha, len(call_keys), *call_keys, *args)
        return list(pipe.execute(raise_on_error=False))

    replies = send(calls)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
    if missing:
        r.script_load(script)
        for i, reply in zip(missing, send([calls[i] for i in missing]), strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


CLOCK_KEY = "clock"


def server_time_us(r: RedisClient) -> int:
    """Redis's clock in microseconds: one clock for every writer, used to order cache snapshots. In a cluster, the
    clock of the node serving one fixed slot (after a failover, its replica's: keep the nodes' clocks in sync)."""
    if is_cluster(r):
        node = cast(Any, r).get_node_from_key(CLOCK_KEY)
        seconds, micros = cast(Any, r).execute_command("TIME", target_nodes=node)
    else:
        seconds, micros = r.time()
    return int(seconds) * 1_000_000 + int(micros)
