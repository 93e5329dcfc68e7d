"""The Celery broker for every process: the settings a sender needs, a sending app, calls to the worker that owns the
embedded engine; and the broker seen from outside Celery: queue depth and age, recovery of a dead worker's messages.

Redis broker (kombu's Redis transport): each queue is a list (plus one list per priority step, ``{queue}\\x06\\x163``
and so on); producers ``LPUSH`` and workers ``BRPOP``, so the oldest waiting message is at index -1. A message a
worker has taken but not acknowledged sits in the ``unacked`` hash (tag -> message, exchange, routing key) until it
is acknowledged, or until a worker restores it once it has been there ``visibility_timeout`` seconds.

AMQP (RabbitMQ): the depth comes from a passive ``queue.declare``; the broker itself requeues a dead consumer's
unacknowledged messages, so there is nothing to restore.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from kombu import Connection
from kombu.transport import redis as kombu_redis

from app.client.sending import sender_config, transport_options
from app.core import constants as c
from app.core.errors import TransientError
from app.core.settings import Settings
from app.stores import read_channel
from app.stores.runtime import Runtime, resolve_redis_url

log = logging.getLogger(__name__)

# Message header set by the project's producer: when the message was sent, in epoch milliseconds.
SENT_AT_HEADER = "sent_at_ms"
CONNECT_TIMEOUT_S = 5.0
# Fail fast instead of kombu's default of retrying a connection forever.
TRANSPORT_OPTIONS: dict[str, Any] = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5}


@dataclass(frozen=True)
class QueueStats:
    depth: int
    # Seconds since the oldest waiting message was sent: 0 when nothing waits, None when it cannot be known (a
    # message without the ``sent_at_ms`` header, or an AMQP broker, where only consuming would tell).
    oldest_age_s: float | None


def _result_backend(redis_url: str, broker_url: str) -> str:
    if "+cluster://" not in redis_url:
        return redis_url
    return broker_url if broker_url.startswith(("redis://", "rediss://")) else "rpc://"


def client_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings of any process of the stack that talks to the broker: a sender's (``sender_config``),
    plus where read results come back. Workers extend them (``tasks/config.py``); the CLI and the read sources use
    them as they are."""
    try:
        redis_url = resolve_redis_url(settings)
    except Exception:
        # Not running yet (e.g. `python -m app --help`); connecting later gives the clear error.
        redis_url = "redis://127.0.0.1:6379/0"
    url = settings.celery_broker_url or redis_url
    return {
        **sender_config(url),
        # Unacknowledged messages (a worker died) return to the queue after this long; longer than any task.
        "broker_transport_options": {
            **transport_options(url),
            "visibility_timeout": settings.broker_visibility_timeout_s,
        },
        # A Redis Cluster cache cannot hold Celery's results: they travel back over the broker instead.
        "result_backend": _result_backend(redis_url, url),
        "result_expires": 3600,
    }


def client_app(settings: Settings) -> Celery:
    """A Celery app that sends tasks by name and waits for read results; it registers and runs no task."""
    app = Celery("usermetrics-client", set_as_current=False)
    app.conf.update(client_config(settings))
    return app


def broker_url(settings: Settings) -> str:
    """The Celery broker: ``CELERY_BROKER_URL``, else the Redis of the stack (as ``tasks/config.py`` resolves it)."""
    return settings.celery_broker_url or resolve_redis_url(settings)


def _connection(url: str) -> Connection:
    return Connection(url, connect_timeout=CONNECT_TIMEOUT_S, transport_options=dict(TRANSPORT_OPTIONS))


def _is_redis(conn: Connection) -> bool:
    return conn.transport.driver_type == "redis"


def restore_unacked(broker_url: str) -> int:
    """Put every message a worker took but never acknowledged back on its queue; returns how many.

    Only safe when no other worker consumes this broker (a live worker's in-flight messages are in the same hash):
    in embedded mode, at worker start. A no-op (0) for brokers that are not Redis.
    """
    with _connection(broker_url) as conn:
        if not _is_redis(conn):
            return 0
        channel = conn.default_channel
        assert isinstance(channel, kombu_redis.Channel)
        with channel.conn_or_acquire() as client:
            tags = [_text(tag) for tag in client.hkeys(channel.unacked_key)]
        qos = channel.qos
        assert isinstance(qos, kombu_redis.QoS)
        for tag in tags:
            # Behind the messages already waiting (like a rejected message): a message that kills its worker
            # cannot starve the others on every restart.
            qos.restore_by_tag(tag, leftmost=True)
    if tags:
        log.warning("restored %d unacknowledged broker message(s) to their queues", len(tags))
    return len(tags)


def queue_stats(broker_url: str, queues: Iterable[str]) -> dict[str, QueueStats]:
    """Depth of each queue and, when the messages say when they were sent, the age of the oldest one."""
    names = list(dict.fromkeys(queues))
    with _connection(broker_url) as conn:
        if _is_redis(conn):
            channel = conn.default_channel
            assert isinstance(channel, kombu_redis.Channel)
            return _redis_stats(channel, names, time.time())
        return {name: QueueStats(_declared_depth(conn, name), None) for name in names}


def _sub_queues(channel: kombu_redis.Channel, queue: str) -> list[str]:
    """The lists holding one queue: the queue itself and one per priority step (kombu's naming)."""
    keys = [f"{queue}{channel.sep}{pri}" if pri else queue for pri in channel.priority_steps]
    return list(dict.fromkeys([queue, *keys]))


def _redis_stats(channel: kombu_redis.Channel, queues: list[str], now_s: float) -> dict[str, QueueStats]:
    keys = {queue: _sub_queues(channel, queue) for queue in queues}
    with channel.conn_or_acquire() as client:
        pipe = client.pipeline(transaction=False)
        for subs in keys.values():
            for key in subs:
                pipe.llen(key)
                pipe.lindex(key, -1)
        replies = iter(pipe.execute())
    stats = {}
    for queue, subs in keys.items():
        tails = [(int(next(replies)), next(replies)) for _ in subs]
        depth = sum(length for length, _ in tails)
        sent = [_sent_at_ms(tail) for length, tail in tails if length]
        stats[queue] = QueueStats(depth, _oldest_age_s(sent, now_s))
    return stats


def _oldest_age_s(sent_at_ms: list[float | None], now_s: float) -> float | None:
    """Age of the oldest of the sub-queues' oldest messages; unknown if any of them has no send time."""
    if not sent_at_ms:
        return 0.0
    known = [ms for ms in sent_at_ms if ms is not None]
    if len(known) < len(sent_at_ms):
        return None
    return max(0.0, now_s - min(known) / 1000)


def _sent_at_ms(raw: bytes | str | None) -> float | None:
    if raw is None:
        return None
    try:
        payload = json.loads(raw)
        value = payload["headers"][SENT_AT_HEADER]
        return float(value) if value is not None else None
    except (ValueError, TypeError, KeyError):
        return None


def _declared_depth(conn: Connection, queue: str) -> int:
    """Messages ready in ``queue`` by a passive declare (0 when the queue does not exist yet)."""
    channel: Any = conn.channel()
    try:
        ok = channel.queue_declare(queue=queue, passive=True)
        return int(ok.message_count)
    except conn.channel_errors:
        return 0  # not declared: nothing waiting (the failed declare closed the channel)
    finally:
        with contextlib.suppress(Exception):
            channel.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# One sending Celery app per runtime (it holds the broker and result-backend connections).
_clients: weakref.WeakKeyDictionary[Runtime, Celery] = weakref.WeakKeyDictionary()


def through_worker(rt: Runtime, task: str, timeout_s: float | None = None, **kwargs: Any) -> Any:
    """Run a task of the ``reads`` queue on the worker that owns the embedded ClickHouse (embedded mode while the
    stack runs) and wait for its answer (``READ_TIMEOUT_S`` unless ``timeout_s``)."""
    timeout_s = rt.settings.read_timeout_s if timeout_s is None else timeout_s
    if task in c.CHANNEL_READS:
        answered, answer = read_channel.call(rt, task, kwargs, timeout_s)
        if answered:
            return answer
    client = _clients.get(rt)
    if client is None:
        client = _clients[rt] = client_app(rt.settings)
    result = client.send_task(task, kwargs=kwargs, queue=c.READS_QUEUE)
    try:
        return result.get(timeout=timeout_s)
    except CeleryTimeout as exc:
        raise TransientError(f"the worker did not answer {task} within {timeout_s} s") from exc
