"""``python -m app run``: the whole stack (worker, beat, Flower) in one command, stopped cleanly by Ctrl-C.

Embedded mode: a private redis-server is started first and its URL handed to every child; the worker runs a
thread pool so that it is the only process opening the chdb data path (beat and Flower never touch ClickHouse).
Beside it an events-only worker (``ingest``, a prefork pool of ``INGEST_PROCESSES``) takes the event tasks too: an
event task only validates its message and appends it to the buffer in Redis, so it needs no engine, and a pool of
processes runs it beside the owner's interpreter instead of queueing behind it (the owner's flusher writes).
Server mode (service URLs set): the same processes against the configured services, with a prefork pool.

The runner supervises: a child that exits is started again after a backoff (1 s, doubling up to 30 s, back to 1 s
once a child stayed up 60 s), and the others keep running. An embedded redis-server the runner started is started
again if it dies, on the same port (its AOF brings the data back), and the worker is then restarted so that it
recovers the broker messages it had taken. Ctrl-C or SIGTERM stops everything.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.core import constants as c
from app.core.settings import Settings
from app.local import embedded_redis
from app.stores import clickhouse

CELERY = [sys.executable, "-m", "celery", "-A", "tasks.celery_app:celery_app"]
STOP_TIMEOUT_S = 15.0
POLL_S = 0.2
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
# A process that stayed up this long before it died is restarted after the initial delay again.
BACKOFF_RESET_AFTER_S = 60.0

Log = Callable[[str], None]


@dataclass
class Backoff:
    """Delays between restarts of something that keeps dying: doubling, capped, reset by a long enough run."""

    initial_s: float = BACKOFF_INITIAL_S
    max_s: float = BACKOFF_MAX_S
    reset_after_s: float = BACKOFF_RESET_AFTER_S
    delay_s: float = 0.0

    def next_delay(self, uptime_s: float) -> float:
        """The wait before starting again something that ran ``uptime_s`` seconds before it died."""
        if self.delay_s == 0.0 or uptime_s >= self.reset_after_s:
            self.delay_s = self.initial_s
        else:
            self.delay_s = min(self.max_s, self.delay_s * 2)
        return self.delay_s


@dataclass
class Child:
    """One supervised process of the stack (in its own process group) and its restart schedule."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=Backoff)

    def spawn(self, env: dict[str, str]) -> int:
        """Start the process; returns its pid."""
        self.proc = subprocess.Popen(self.argv, env=env, start_new_session=True)  # noqa: S603 - our own argv
        self.started_at = time.monotonic()
        self.restart_at = None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def ingest_worker_argv(processes: int, log_level: str) -> list[str]:
    """The embedded stack's events-only worker: the events queue, a prefork pool, no write path of its own."""
    return [
        *CELERY,
        "worker",
        "-Q",
        c.EVENTS_QUEUE,
        "--pool",
        "prefork",
        "--concurrency",
        str(processes),
        "--hostname",
        "ingest@%h",
        "--without-write-path",
        "--loglevel",
        log_level,
    ]


def commands(settings: Settings, beat_schedule_path: str) -> dict[str, list[str]]:
    """The processes of the stack. Flower reads its credentials from FLOWER_BASIC_AUTH (never argv)."""
    pool = ["--pool", "threads"] if settings.clickhouse_embedded else ["--pool", "prefork"]
    ingest = {}
    if settings.clickhouse_embedded and settings.ingest_processes:
        ingest["ingest"] = ingest_worker_argv(settings.ingest_processes, settings.log_level)
    return {
        "worker": [
            *CELERY,
            "worker",
            "-Q",
            f"{c.EVENTS_QUEUE},{c.MAINTENANCE_QUEUE},{c.READS_QUEUE}",
            *pool,
            "--concurrency",
            str(settings.worker_concurrency),
            "--hostname",
            "worker@%h",
            "--loglevel",
            settings.log_level,
        ],
        **ingest,
        "beat": [*CELERY, "beat", "--schedule", beat_schedule_path, "--loglevel", settings.log_level],
        "flower": [
            *CELERY,
            "flower",
            f"--port={settings.flower_port}",
            "--address=127.0.0.1" if settings.env == "dev" else "--address=0.0.0.0",
        ],
    }


def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _terminate(children: list[Child], log: Log) -> None:
    """SIGTERM every running child's process group, wait, then SIGKILL what is left."""
    procs = [(child.name, child.proc) for child in children if child.proc is not None]
    for _, proc in procs:
        if proc.poll() is None:
            _kill_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, proc in procs:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            proc.wait(remaining)
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop in time; killing it")
            _kill_group(proc, signal.SIGKILL)
            proc.wait()


class Supervisor:
    """Keeps the children (and an embedded Redis the runner started) running until told to stop."""

    def __init__(self, settings: Settings, redis: embedded_redis.Server, flower_auth: str, log: Log) -> None:
        self.settings = settings
        self.redis = redis
        self.flower_auth = flower_auth
        self.log = log
        self.redis_backoff = Backoff()
        self.redis_retry_at = 0.0
        cmds = commands(settings, str(settings.data_path / "celerybeat-schedule"))
        self.children = [Child(name, argv) for name, argv in cmds.items()]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATA_DIR=str(self.settings.data_path),
            REDIS_URL=self.redis.url,
            CELERY_BROKER_URL=self.settings.celery_broker_url or self.redis.url,
            FLOWER_BASIC_AUTH=self.flower_auth,
        )
        return env

    def start(self) -> None:
        env = self.env()
        for child in self.children:
            child.spawn(env)

    def stop(self) -> None:
        _terminate(self.children, self.log)

    def tick(self) -> None:
        """One round of supervision: Redis first (the children depend on it), then each child."""
        now = time.monotonic()
        if self.redis.dead() and now >= self.redis_retry_at:
            self._restart_redis()
        for child in self.children:
            self._watch(child, now)

    def _watch(self, child: Child, now: float) -> None:
        if child.proc is not None and child.restart_at is None and child.proc.poll() is not None:
            _kill_group(child.proc, signal.SIGKILL)  # leftovers of its group (pool processes)
            delay = child.backoff.next_delay(now - child.started_at)
            child.restart_at = now + delay
            self.log(f"{child.name} exited with code {child.proc.returncode}; restarting it in {delay:g} s")
        elif child.restart_at is not None and now >= child.restart_at:
            self.log(f"{child.name} restarted (pid {child.spawn(self.env())})")

    def _restart_redis(self) -> None:
        old_url, old_pid = self.redis.url, self.redis.pid
        self.log(f"embedded redis-server (pid {old_pid}) died; starting it again")
        try:
            self.redis.restart(self.settings)
        except Exception as exc:  # keep supervising; try again after a backoff
            delay = self.redis_backoff.next_delay(0.0)
            self.redis_retry_at = time.monotonic() + delay
            self.log(f"embedded redis-server did not start ({exc}); trying again in {delay:g} s")
            return
        self.redis_backoff.delay_s = 0.0
        self.log(f"embedded redis-server running again at {self.redis.url} (pid {self.redis.pid})")
        # The workers restart so that they put back the broker messages they had taken; if the URL changed (the
        # old port was taken) every child needs the new one.
        moved = self.redis.url != old_url
        for child in self.children:
            if moved or child.name in ("worker", "ingest"):
                self._restart_now(child)

    def _restart_now(self, child: Child) -> None:
        if child.running():
            _terminate([child], self.log)
        self.log(f"{child.name} restarted (pid {child.spawn(self.env())})")


def _flower_auth(settings: Settings) -> tuple[str, bool]:
    """Flower's ``user:password`` and whether it was generated here (dev without FLOWER_BASIC_AUTH)."""
    auth = settings.require_flower_auth()
    if auth is None:
        return f"admin:{secrets.token_urlsafe(12)}", True
    return auth, False


def _banner(settings: Settings, redis_url: str, auth: str, generated: bool) -> str:
    user, password = auth.split(":", 1)
    shown = password if generated else "(the password in FLOWER_BASIC_AUTH)"
    return (
        f"Stack running ({'embedded' if settings.clickhouse_embedded else 'server'} ClickHouse, "
        f"Redis at {redis_url}).\n"
        f"Flower: http://127.0.0.1:{settings.flower_port}/  login: {user} / {shown}\n"
        "Press Ctrl-C to stop."
    )


def _print(message: str) -> None:
    print(message, flush=True)  # promptly, also when stdout is a file or a pipe


def run_stack(settings: Settings, log: Log = _print) -> int:
    if clickhouse.owner_is_elsewhere(settings):
        log(f"The embedded ClickHouse at {settings.chdb_path} is already owned by a running worker.")
        return 1
    settings.data_path.mkdir(parents=True, exist_ok=True)
    auth, generated = _flower_auth(settings)
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with embedded_redis.managed(settings) as redis_server:
            supervisor = Supervisor(settings, redis_server, auth, log)
            supervisor.start()
            try:
                log(_banner(settings, redis_server.url, auth, generated))
                while not stopping:
                    supervisor.tick()
                    time.sleep(POLL_S)
                log("Stopping...")
            finally:
                supervisor.stop()
            return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
