"""The production shape for ``bench chaos``, on this machine and owned by the soak: a ClickHouse server, a cache
Redis with its AOF, a broker (a RabbitMQ vhost of its own, or a Redis broker with its AOF), two prefork event
workers, the maintenance worker and beat, each restarted by a supervisor when it exits (as a container's restart
policy or the Procfile's platform would). The soak touches only the processes it started, by their ids."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from app.core import constants as c
from app.core.settings import Settings
from app.local import clickhouse_server, embedded_redis, process
from app.local.clickhouse_server import ServerPaths
from app.stores import migrations
from app.stores.runtime import Runtime
from bench.harness import CHECKOUT

CELERY = [sys.executable, "-m", "celery", "-A", "tasks.celery_app:celery_app"]
RESTART_DELAY_S = 1.0
REDIS_VISIBILITY_TIMEOUT_S = 120  # a supervisor's restart delay (Docker's first one is 0.1 s, growing)
# Jobs every few seconds, so that every one of them runs, and is killed, many times in a soak.
JOB_INTERVALS = {
    "ENGAGEMENT_INTERVAL_S": "15",
    "RANKS_INTERVAL_S": "15",
    "REFRESH_INTERVAL_S": "20",
    "RECONCILE_INTERVAL_S": "30",
    "SNAPSHOT_INTERVAL_S": "10",
    "ACHIEVEMENTS_INTERVAL_S": "30",
    "PEERS_INTERVAL_S": "60",
    "BUFFER_CHECK_INTERVAL_S": "10",
}


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (a prefork worker's pool processes), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children, in MB (0 when gone)."""
    total = 0
    for p in [pid, *children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


@dataclass
class Supervised:
    """One process of the stack, in its own process group, started again ``RESTART_DELAY_S`` after it exits."""

    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    held: bool = False  # a deploy or a fault is stopping it on purpose: not restarted until released
    exited_at: float | None = None

    def start(self, env: dict[str, str]) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own argv
                self.argv, env=env, cwd=CHECKOUT, stdout=out, stderr=out, start_new_session=True
            )
        self.exited_at = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def signal(self, sig: signal.Signals, group: bool = False) -> bool:
        pid = self.pid
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig) if group else os.kill(pid, sig)
        return True

    def wait_exit(self, timeout_s: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True


@dataclass
class ChaosStack:
    root: Path
    broker_kind: str  # "rabbitmq" or "redis"
    clickhouse: ServerPaths = field(init=False)
    clickhouse_url: str = ""
    cache: embedded_redis.Server = field(default_factory=lambda: embedded_redis.Server(""))
    broker_redis: embedded_redis.Server | None = None
    broker_url: str = ""
    # A vhost of this soak's own (two soaks on one RabbitMQ never share one), deleted at the end.
    vhost: str = field(default_factory=lambda: f"usermetrics_chaos_{os.getpid()}")
    procs: dict[str, Supervised] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.clickhouse = ServerPaths(self.root / "clickhouse")
        (self.root / "logs").mkdir(parents=True, exist_ok=True)

    # -- stores ------------------------------------------------------------------------------------------------
    def start_stores(self) -> None:
        base = clickhouse_server.start(self.clickhouse)
        self.clickhouse_url = f"{base}/usermetrics"
        self.cache = embedded_redis.Server(*embedded_redis.start(self._redis_settings("cache")))
        if self.broker_kind == "redis":
            self.broker_redis = embedded_redis.Server(*embedded_redis.start(self._redis_settings("broker")))
            self.broker_url = self.broker_redis.url.rsplit("/", 1)[0] + "/1"
        else:
            rabbitmqctl("add_vhost", self.vhost)
            rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
            self.broker_url = f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}"
        rt = self.runtime()  # the release step: the schema before any process starts
        try:
            migrations.migrate(rt.clickhouse)
        finally:
            rt.close()

    def _redis_settings(self, name: str) -> Settings:
        return Settings(DATA_DIR=str(self.root / name))

    def settings(self) -> Settings:
        return Settings(
            DATA_DIR=str(self.root),
            REDIS_URL=self.cache.url,
            CELERY_BROKER_URL=self.broker_url,
            CLICKHOUSE_URL=self.clickhouse_url,
        )

    def runtime(self) -> Runtime:
        return Runtime(self.settings())

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CLICKHOUSE_CLUSTER")}
        env.update(
            DATA_DIR=str(self.root),
            REDIS_URL=self.cache.url,
            CELERY_BROKER_URL=self.broker_url,
            CLICKHOUSE_URL=self.clickhouse_url,
            LOG_LEVEL="WARNING",
            METRICS_PORT="0",
            TASK_EVENTS="false",
            **JOB_INTERVALS,
        )
        if self.broker_redis is not None:
            # A Redis broker gives a dead worker's taken messages back after the visibility timeout only: a short
            # one (above the longest retry countdown plus a task) so that the soak's end sees them run.
            env.update(BROKER_VISIBILITY_TIMEOUT_S=str(REDIS_VISIBILITY_TIMEOUT_S), RETRY_BACKOFF_MAX_S="30")
        return env

    def broker_unacked(self) -> int:
        """Messages the broker holds as taken by a consumer and not acknowledged yet (queue depths leave them
        out): a Redis broker's ``unacked`` hash, RabbitMQ's per-queue count (``rabbitmqctl``, about a second)."""
        if self.broker_redis is not None:
            return int(redis.Redis.from_url(self.broker_url).hlen("unacked"))
        out = rabbitmqctl("list_queues", "-p", self.vhost, "--no-table-headers", "--quiet", "messages_unacknowledged")
        return sum(int(n) for n in out.split() if n.isdigit())

    # -- processes ---------------------------------------------------------------------------------------------
    def start_processes(self, workers: int = 2, concurrency: int = 2) -> None:
        events = f"{c.EVENTS_QUEUE},{c.READS_QUEUE}"
        argvs = {
            f"worker-{i}": [*CELERY, "worker", "-Q", events, "--pool", "prefork", "-c", str(concurrency)]
            + ["--hostname", f"chaos-worker-{i}@%h", "--loglevel", "WARNING"]
            for i in range(1, workers + 1)
        }
        argvs["maintenance"] = [*CELERY, "worker", "-Q", c.MAINTENANCE_QUEUE, "--pool", "prefork", "-c", "1"]
        argvs["maintenance"] += ["--hostname", "chaos-maintenance@%h", "--loglevel", "WARNING"]
        argvs["beat"] = [*CELERY, "beat", "--schedule", str(self.root / "beat-schedule"), "--loglevel", "WARNING"]
        env = self.env()
        for name, argv in argvs.items():
            self.procs[name] = Supervised(name, argv, self.root / "logs" / f"{name}.log")
            self.procs[name].start(env)
        self._thread = threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.wait(0.2):
            with self.lock:
                for proc in self.procs.values():
                    if proc.proc is None or proc.proc.poll() is None or proc.held:
                        continue
                    now = time.monotonic()
                    if proc.exited_at is None:
                        # What is left of its group (pool processes of a killed parent) goes with it.
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(proc.proc.pid, signal.SIGKILL)
                        proc.exited_at = now
                    elif now - proc.exited_at >= RESTART_DELAY_S:
                        proc.restarts += 1
                        proc.start(self.env())

    def restart(self, name: str, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60.0) -> float:
        """Stop ``name`` with ``sig`` (its whole group after ``timeout_s``) and start it again, as a deploy does;
        returns how long it took to stop."""
        proc = self.procs[name]
        with self.lock:
            proc.held = True
        started = time.monotonic()
        try:
            proc.signal(sig)
            if not proc.wait_exit(timeout_s):
                proc.signal(signal.SIGKILL, group=True)
                proc.wait_exit(10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if proc.proc is not None:
                    os.killpg(proc.proc.pid, signal.SIGKILL)
            stopped = time.monotonic() - started
            with self.lock:
                proc.restarts += 1
                proc.start(self.env())
        finally:
            with self.lock:
                proc.held = False
        return stopped

    def hold(self, name: str, timeout_s: float = 60.0) -> None:
        """Stop ``name`` (SIGTERM, its whole group after ``timeout_s``) and keep it stopped until the end."""
        proc = self.procs[name]
        with self.lock:
            proc.held = True
        proc.signal(signal.SIGTERM)
        if not proc.wait_exit(timeout_s):
            proc.signal(signal.SIGKILL, group=True)
            proc.wait_exit(10)

    def worker_rss_mb(self) -> float:
        return sum(rss_mb(p.pid) for p in self.procs.values() if p.pid is not None and p.name != "beat")

    # -- the end -----------------------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for proc in self.procs.values():
            proc.signal(signal.SIGTERM)
        for proc in self.procs.values():
            if not proc.wait_exit(30):
                proc.signal(signal.SIGKILL, group=True)
                proc.wait_exit(10)
        with contextlib.suppress(Exception):
            os.kill(clickhouse_pid(self.clickhouse), signal.SIGCONT)
        clickhouse_server.stop(self.clickhouse)
        for server in (self.cache, self.broker_redis):
            if server is not None and server.pid is not None:
                embedded_redis.stop(server.pid)
        if self.broker_kind == "rabbitmq":
            rabbitmqctl("delete_vhost", self.vhost)


def clickhouse_pid(paths: ServerPaths) -> int:
    return int(paths.pid.read_text())


def rabbitmqctl(*args: str) -> str:
    """``rabbitmqctl`` on this machine's RabbitMQ: only ever about the soak's own vhost."""
    binary = shutil.which("rabbitmqctl")
    if binary is None:
        raise RuntimeError("the RabbitMQ soak needs rabbitmqctl (Debian's rabbitmq-server)")
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
    if done.returncode != 0 and "already_exists" not in done.stderr + done.stdout:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def redis_restart(server: embedded_redis.Server, settings: Settings) -> None:
    """SIGKILL a Redis the soak started and start it again on its port: its AOF brings the data back."""
    if server.pid is not None:
        pid = server.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        process.wait_until(lambda: not process.pid_alive(pid), 10)
    server.url, server.pid = embedded_redis.start(settings)
