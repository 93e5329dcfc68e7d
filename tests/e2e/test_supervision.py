"""`python -m app run` supervises its processes instead of tearing the stack down.

The embedded redis-server keeps its port: across a clean stop and start, and across a crash (the runner starts it
again); only a port taken by another program moves it.

Given the stack on embedded defaults (its own data directory), when the worker is killed with SIGKILL, then the
runner starts a new worker and the embedded Redis keeps running on the same port; when the redis-server is killed
with SIGKILL, then the runner starts it again on the same port with its data (AOF), and restarts both workers (the
engine's owner and the events-only one); and SIGTERM still stops everything.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from app.core.paths import REPO
from app.core.settings import Settings
from app.local import embedded_redis
from app.local.process import pid_alive
from app.ops.runner import Backoff
from tests.e2e.test_stack_e2e import _free_port, _processes_with


def _wait(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # not there yet
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def _children(ppid: int) -> dict[int, str]:
    """Direct children of ``ppid``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
            found[int(entry.name)] = cmdline
    return found


def _listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return found


def _worker_pid(runner: int, hostname: str = "worker") -> int | None:
    """The runner's Celery worker of ``hostname``: ``worker`` (the engine's owner) or ``ingest`` (events only)."""
    pids = [pid for pid, cmd in _children(runner).items() if " worker " in cmd and f"{hostname}@%h" in cmd]
    return pids[0] if len(pids) == 1 else None


class Stack:
    def __init__(self, data: Path, log: Path) -> None:
        self.data, self.log = data, log
        self.metrics_port = _free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL", "CLICKHOUSE_URL")}
        env.update(
            DATA_DIR=str(data),
            FLOWER_PORT=str(_free_port()),
            FLOWER_BASIC_AUTH="ops:s3cret",
            METRICS_PORT=str(self.metrics_port),
            APP_ENV="dev",
            LOG_LEVEL="WARNING",
            WORKER_CONCURRENCY="2",
        )
        self.env = env
        with open(log, "w") as out:
            self.proc = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "app", "run"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text()

    def redis_url(self) -> str:
        return (self.data / "redis" / "url").read_text().strip()

    def redis_pid(self) -> int:
        return int((self.data / "redis" / "redis.pid").read_text().strip())

    def worker_ready(self) -> bool:
        """The worker answers on its metrics endpoint (it serves it once its start-up is done)."""
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return "usermetrics_up 1.0" in text and 'usermetrics_broker_queue_depth{queue="events"}' in text

    def force_stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in _processes_with(f"DATA_DIR={self.data}"):
            os.kill(pid, signal.SIGKILL)
        pidfile = self.data / "redis" / "redis.pid"
        if pidfile.exists() and pid_alive(pid := int(pidfile.read_text().strip())):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "data", tmp_path / "stack.log")
    try:
        yield s
    finally:
        s.force_stop()


def _embedded(data: Path) -> Settings:
    return Settings(DATA_DIR=str(data), REDIS_URL="")  # no configured Redis: embedded mode


def test_embedded_redis_keeps_its_port_across_restarts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = _embedded(tmp_path)
    with embedded_redis.managed(settings) as server:
        assert server.owned
        first_url = server.url
        redis.Redis.from_url(server.url).set("kept", "yes", ex=600)
    assert embedded_redis.running_url(settings) is None  # stopped; its port stays recorded

    with embedded_redis.managed(settings) as server:
        assert server.url == first_url  # a clean stop and start: same URL
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        _wait(server.dead, 5, "the killed server to be seen dead")
        server.restart(settings)
        assert server.url == first_url and not server.dead()  # a crash: same URL, data from the AOF
        client = redis.Redis.from_url(server.url)
        assert client.get("kept") == b"yes" and client.ttl("kept") > 0
        client.close()

    port = int(first_url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as squatter:  # another program took the port meanwhile
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with embedded_redis.managed(settings) as server:
            assert server.url != first_url and redis.Redis.from_url(server.url).get("kept") == b"yes"
    assert f"port {port} (used before) is taken" in caplog.text
    assert embedded_redis.recorded_port(settings) != port  # the new port is the one kept from now on


def test_restart_backoff_doubles_to_a_cap_and_resets_after_a_long_run() -> None:
    backoff = Backoff()
    assert [backoff.next_delay(uptime_s=0.5) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.next_delay(uptime_s=61) == 1
    assert backoff.next_delay(uptime_s=5) == 2


@pytest.mark.e2e
def test_runner_restarts_a_dead_worker_and_a_dead_redis(stack: Stack) -> None:
    runner = stack.proc.pid
    _wait(lambda: "Stack running" in stack.output(), 60, "the stack to start")
    _wait(stack.worker_ready, 60, "the worker's metrics endpoint")
    assert _listening_addresses(stack.metrics_port) == {"127.0.0.1"}  # METRICS_ADDRESS defaults to loopback
    url, redis_pid = stack.redis_url(), stack.redis_pid()
    client = redis.Redis.from_url(url, socket_timeout=2)
    client.set("supervision:probe", "kept", ex=3600)

    # A dead worker is started again; Redis is left alone.
    first = _wait(lambda: _worker_pid(runner), 10, "the worker process")
    os.kill(first, signal.SIGKILL)
    second = _wait(lambda: (pid := _worker_pid(runner)) not in (None, first) and pid, 20, "a new worker")
    _wait(stack.worker_ready, 60, "the restarted worker")
    assert "worker exited with code -9; restarting it in 1 s" in stack.output()
    assert stack.redis_url() == url and stack.redis_pid() == redis_pid and pid_alive(redis_pid)
    assert stack.proc.poll() is None

    # A dead redis-server is started again on the same port with its data; both workers are restarted after it.
    ingest = _wait(lambda: _worker_pid(runner, "ingest"), 10, "the events-only worker")
    os.kill(redis_pid, signal.SIGKILL)
    _wait(lambda: stack.redis_pid() != redis_pid and client.ping(), 20, "redis-server to come back")
    assert stack.redis_url() == url
    assert client.get("supervision:probe") == b"kept"
    assert 0 < client.ttl("supervision:probe") <= 3600
    third = _wait(lambda: (pid := _worker_pid(runner)) not in (None, second) and pid, 30, "the worker restart")
    _wait(stack.worker_ready, 60, "the worker after the Redis restart")
    _wait(lambda: (pid := _worker_pid(runner, "ingest")) not in (None, ingest) and pid, 30, "the events-only restart")
    assert third != first and stack.proc.poll() is None
    new_redis_pid = stack.redis_pid()

    # SIGTERM stops everything, the embedded Redis included.
    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(60) == 0, stack.output()[-3000:]
    _wait(lambda: not pid_alive(new_redis_pid), 10, "redis-server to stop")
    assert _children(runner) == {}
    assert _processes_with(f"DATA_DIR={stack.data}") == [], "stray processes after SIGTERM"
    assert not (stack.data / "redis" / "url").exists()
