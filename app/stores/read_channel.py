"""The read channel: reads answered by the process that owns the embedded ClickHouse over two Redis lists, a few
milliseconds faster than a Celery round trip.

In embedded mode only the worker's process may open the engine, so a web app's cache miss must ask that process.
Through Celery (the ``reads`` queue) the question and its answer cost about 8 ms more than the query itself on a
2-core machine, idle: a broker message, the worker's consumer, its task events, the result backend's store and
publish. That is more than the whole budget of a reactions miss. The channel is the same question on a list:

- the owner runs ``ReadServer`` threads: each pops a request (``BRPOP`` on ``reads:{channel}:requests``), answers it
  with the handler of its task and pushes the answer on the request's own reply list, which expires;
- a caller (``call``) pushes its request with a script that first checks the servers' heartbeat key, and waits on
  its reply list (``BLPOP``). No heartbeat (no owner running a server, or one that died), and the script pushes
  nothing and the caller uses Celery: the channel is never the only way to an answer.

A request carries its deadline; a server drops one whose caller has given up. A request that cannot be read (not
JSON, no id) is logged and dropped: it has no reply list to answer on. A handler's error is the caller's error:
a ``ValidationError`` stays one, anything else is a ``TransientError``. Every key expires.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from app.core.errors import TransientError, ValidationError
from app.stores.redis_store import RedisClient, is_cluster
from app.stores.runtime import Runtime, resolve_redis_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Channel:
    """The keys of one channel; the service's is ``CHANNEL``. The name is a hash tag: a channel's keys share a slot."""

    name: str = "channel"

    @property
    def requests(self) -> str:
        return f"reads:{{{self.name}}}:requests"

    @property
    def server(self) -> str:
        return f"reads:{{{self.name}}}:server"

    def reply(self, request_id: str) -> str:
        return f"reads:{{{self.name}}}:reply:{request_id}"


CHANNEL = Channel()
HEARTBEAT_TTL_S = 5  # a server refreshes it every POLL_S: one that died stops being asked within this
POLL_S = 1
REPLY_TTL_S = 60
REQUESTS_TTL_S = 60  # the requests list of a server gone for good expires

# KEYS[1] the heartbeat, KEYS[2] the requests; ARGV[1] the request, ARGV[2] the list's TTL. 1: pushed; 0: no server.
_SEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

Handler = Callable[..., Any]

_waiting: weakref.WeakKeyDictionary[Runtime, RedisClient] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def _blocking_client(rt: Runtime) -> RedisClient:
    """A client of the cache Redis without a read timeout, for waits longer than ``REDIS_TIMEOUT_S``."""
    with _guard:
        client = _waiting.get(rt)
        if client is None:
            client = _waiting[rt] = redis.Redis.from_url(
                resolve_redis_url(rt.settings),
                decode_responses=True,
                socket_connect_timeout=rt.settings.redis_timeout_s,
            )
        return client


def call(
    rt: Runtime, task: str, kwargs: Mapping[str, Any], timeout_s: float, channel: Channel = CHANNEL
) -> tuple[bool, Any]:
    """``(True, answer)`` from the owner's read server, or ``(False, None)`` when none is listening (use Celery)."""
    if is_cluster(rt.redis):
        return False, None
    request_id = uuid.uuid4().hex
    body = json.dumps({"id": request_id, "task": task, "kwargs": dict(kwargs), "deadline": time.time() + timeout_s})
    if not int(rt.redis.eval(_SEND, 2, channel.server, channel.requests, body, REQUESTS_TTL_S)):
        return False, None
    got = _blocking_client(rt).blpop([channel.reply(request_id)], timeout=timeout_s)
    if got is None:
        raise TransientError(f"the worker did not answer {task} within {timeout_s} s")
    answer = json.loads(got[1])
    if answer.get("stopped"):  # the server stopped before taking the request
        return False, None
    if "error" in answer:
        kind = ValidationError if answer.get("kind") == "ValidationError" else TransientError
        raise kind(f"{task}: {answer['error']}")
    return True, answer["result"]


class ReadServer:
    """``threads`` threads answering the channel's requests with ``handlers`` (task name → function of the
    request's keyword arguments), in the process that owns the engine."""

    def __init__(
        self, rt: Runtime, handlers: Mapping[str, Handler], threads: int = 2, channel: Channel = CHANNEL
    ) -> None:
        self.rt, self.handlers, self.channel = rt, dict(handlers), channel
        self._stop = threading.Event()
        self._beat = threading.Lock()  # the heartbeat's renewal against its removal by ``stop``
        self._threads = [
            threading.Thread(target=self._serve, name=f"read-server-{i}", daemon=True) for i in range(threads)
        ]
        self.answered = 0

    def start(self) -> None:
        if is_cluster(self.rt.redis):
            log.info("the read channel is off on a Redis Cluster: reads go through Celery")
            return
        for t in self._threads:
            t.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._beat:  # no serving thread renews the heartbeat after this
            self._stop.set()
            try:
                self.rt.redis.delete(self.channel.server)  # callers go to Celery at once
            except redis.RedisError:
                log.warning("could not remove the read channel's heartbeat; it expires in %d s", HEARTBEAT_TTL_S)
        for t in self._threads:
            if t.is_alive():
                t.join(timeout_s)
        self._send_back_waiting()

    def _send_back_waiting(self) -> None:
        """Requests pushed before the heartbeat went and not taken: their callers are sent to Celery now instead of
        waiting out their timeouts."""
        try:
            while (raw := self.rt.redis.rpop(self.channel.requests)) is not None:
                try:
                    request_id = str(json.loads(str(raw))["id"])
                except (ValueError, KeyError, TypeError):
                    continue
                self._reply(request_id, {"stopped": True})
        except redis.RedisError as exc:
            log.warning("read channel: could not send waiting callers to Celery (%s); they time out", exc)

    terminate = stop

    def _serve(self) -> None:
        waiting = _blocking_client(self.rt)
        while not self._stop.is_set():
            try:
                with self._beat:
                    if self._stop.is_set():
                        break
                    self.rt.redis.set(self.channel.server, os.getpid(), ex=HEARTBEAT_TTL_S)
                got = waiting.brpop([self.channel.requests], timeout=POLL_S)
                if got is not None:  # taken, so answered, even while stopping: its caller waits for it
                    self._answer(str(got[1]))
            except redis.RedisError as exc:
                log.warning("read channel: Redis unreachable (%s); retrying", exc)
                self._stop.wait(POLL_S)
            except Exception:  # a server thread must outlive any one request
                log.exception("read channel: a request failed outside its handler")

    def _answer(self, raw: str) -> None:
        try:
            request = json.loads(raw)
            request_id, task = str(request["id"]), str(request["task"])
            kwargs, deadline = dict(request.get("kwargs") or {}), float(request["deadline"])
        except (ValueError, KeyError, TypeError) as exc:
            log.error("read channel: dropped a request that cannot be read (%s): %.200r", exc, raw)
            return
        if time.time() > deadline:
            return  # its caller has given up (and gone to no one else: reads have no effects)
        handler = self.handlers.get(task)
        answer: dict[str, Any]
        try:
            if handler is None:
                raise ValidationError(f"no read named {task!r} on the channel")
            answer = {"result": handler(**kwargs)}
        except Exception as exc:
            answer = {"error": str(exc) or type(exc).__name__, "kind": type(exc).__name__}
        self._reply(request_id, answer)
        self.answered += 1

    def _reply(self, request_id: str, answer: dict[str, Any]) -> None:
        reply = self.channel.reply(request_id)
        pipe = self.rt.redis.pipeline(transaction=False)
        pipe.lpush(reply, json.dumps(answer))
        pipe.expire(reply, REPLY_TTL_S)
        pipe.execute()
