"""The faults of ``bench chaos``: each one injected into the soak's own stack (``bench/chaos_stack.py``) by process
id, port or vhost, never into the machine's services. A fault returns when what it broke is back (a process
restarted, a server continued): the soak measures recovery from that moment."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import clickhouse_connect
import redis

from app.jobs.run import job_lock_key
from app.local import clickhouse_server
from bench.chaos_stack import ChaosStack, children, clickhouse_pid, rabbitmqctl, redis_restart

KINDS = (
    "kill_worker_child",  # SIGKILL one pool process of an event worker (the pool replaces it)
    "kill_worker",  # SIGKILL an event worker with its pool (a container killed); the supervisor restarts it
    "term_worker",  # SIGTERM an event worker (warm shutdown), then start it again
    "kill_beat",  # SIGKILL beat; the supervisor restarts it
    "restart_clickhouse",  # stop the ClickHouse server cleanly and start it again
    "stop_clickhouse",  # SIGSTOP the ClickHouse server for a while, then SIGCONT
    "restart_cache_redis",  # SIGKILL the cache Redis and start it again from its AOF
    "broker_blip",  # close every connection of the soak's RabbitMQ vhost, or restart the Redis broker from its AOF
    "refuse_inserts",  # the event log refuses inserts for a while (parts_to_throw_insert = 1)
    "kill_job",  # SIGKILL the maintenance worker's pool process while a beat job runs
)
EVENT_WORKERS = ("worker-1", "worker-2")


@dataclass
class Fault:
    kind: str
    started: float  # monotonic
    ended: float  # monotonic: what it broke is back
    detail: str = ""


class Injector:
    def __init__(self, stack: ChaosStack, rng: random.Random, stop_s: float, refuse_s: float) -> None:
        self.stack = stack
        self.rng = rng
        self.stop_s = stop_s
        self.refuse_s = refuse_s
        # One fault at a time per target; faults on different targets overlap.
        self.locks = {name: threading.Lock() for name in ("clickhouse", "cache", "broker", *stack.procs)}
        self.actions: dict[str, Callable[[], str]] = {
            "kill_worker_child": self._kill_worker_child,
            "kill_worker": lambda: self._kill_and_wait_restart(self.rng.choice(EVENT_WORKERS)),
            "term_worker": self._term_worker,
            "kill_beat": lambda: self._kill_and_wait_restart("beat"),
            "restart_clickhouse": self._restart_clickhouse,
            "stop_clickhouse": self._stop_clickhouse,
            "restart_cache_redis": self._restart_cache_redis,
            "broker_blip": self._broker_blip,
            "refuse_inserts": self._refuse_inserts,
            "kill_job": self._kill_job,
        }

    def inject(self, kind: str) -> Fault:
        started = time.monotonic()
        detail = self.actions[kind]()
        return Fault(kind, started, time.monotonic(), detail)

    # -- workers and beat --------------------------------------------------------------------------------------
    def _kill_worker_child(self) -> str:
        name = self.rng.choice(EVENT_WORKERS)
        with self.locks[name]:
            pid = self.stack.procs[name].pid
            pool = children(pid) if pid is not None else []
            if not pool:
                return f"{name}: no pool process"
            victim = self.rng.choice(pool)
            _kill(victim)
            return f"{name} pool process {victim}"

    def _kill_and_wait_restart(self, name: str) -> str:
        proc = self.stack.procs[name]
        with self.locks[name]:
            before = proc.pid
            if before is None or not proc.signal(signal.SIGKILL, group=True):
                return f"{name}: not running"
            deadline = time.monotonic() + 60
            while proc.pid in (None, before) and time.monotonic() < deadline:
                time.sleep(0.05)
            return f"{name} {before} -> {proc.pid}"

    def _term_worker(self) -> str:
        name = self.rng.choice(EVENT_WORKERS)
        with self.locks[name]:
            stopped = self.stack.restart(name, signal.SIGTERM)
            return f"{name} stopped in {stopped:.1f} s"

    def _kill_job(self) -> str:
        cache = redis.Redis.from_url(self.stack.cache.url)
        deadline = time.monotonic() + 30
        running: list[bytes] = []
        while not running and time.monotonic() < deadline:
            try:
                running = list(cache.scan_iter(job_lock_key("*"), count=100))
            except redis.RedisError:
                pass
            time.sleep(0.05)
        with self.locks["maintenance"]:
            pid = self.stack.procs["maintenance"].pid
            pool = children(pid) if pid is not None else []
            for child in pool:
                _kill(child)
        jobs = ", ".join(sorted(k.decode().removeprefix(job_lock_key("")) for k in running)) or "no job running"
        return f"{len(pool)} pool process(es) during {jobs}"

    # -- ClickHouse ----------------------------------------------------------------------------------------------
    def _restart_clickhouse(self) -> str:
        with self.locks["clickhouse"]:
            clickhouse_server.stop(self.stack.clickhouse)
            clickhouse_server.start(self.stack.clickhouse)
            return "restarted"

    def _stop_clickhouse(self) -> str:
        with self.locks["clickhouse"]:
            pid = clickhouse_pid(self.stack.clickhouse)
            _signal(pid, signal.SIGSTOP)
            try:
                time.sleep(self.stop_s)
            finally:
                _signal(pid, signal.SIGCONT)
            return f"stopped {self.stop_s:g} s"

    def _refuse_inserts(self) -> str:
        with self.locks["clickhouse"]:
            client = clickhouse_connect.get_client(dsn=self.stack.clickhouse_url)
            try:
                client.command("ALTER TABLE entityMetricEvents MODIFY SETTING parts_to_throw_insert = 1")
                time.sleep(self.refuse_s)
            finally:
                reset_inserts(client)
                client.close()
            return f"refused {self.refuse_s:g} s"

    # -- Redis and the broker ----------------------------------------------------------------------------------
    def _restart_cache_redis(self) -> str:
        with self.locks["cache"]:
            url = self.stack.cache.url
            redis_restart(self.stack.cache, self.stack._redis_settings("cache"))
            if self.stack.cache.url != url:
                raise RuntimeError(f"the cache Redis came back on another port: {url} -> {self.stack.cache.url}")
            return "restarted from its AOF"

    def _broker_blip(self) -> str:
        with self.locks["broker"]:
            if self.stack.broker_redis is None:
                rabbitmqctl("close_all_connections", "--vhost", self.stack.vhost, "chaos soak")
                return f"closed the connections of vhost {self.stack.vhost}"
            url = self.stack.broker_redis.url
            redis_restart(self.stack.broker_redis, self.stack._redis_settings("broker"))
            if self.stack.broker_redis.url != url:
                raise RuntimeError(f"the Redis broker came back on another port: {url}")
            return "Redis broker restarted from its AOF"


def reset_inserts(client: clickhouse_connect.driver.Client) -> None:
    """Undo ``refuse_inserts`` (retried while the server is restarting or stopped)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            client.command("ALTER TABLE entityMetricEvents RESET SETTING parts_to_throw_insert")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _kill(pid: int) -> None:
    _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
