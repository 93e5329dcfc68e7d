"""``python -m app run``: the whole stack (worker, beat, Flower) in one command, stopped cleanly by Ctrl-C.

Embedded mode: a private redis-server is started first and its URL handed to every child; the worker runs a
thread pool so that it is the only process opening the chdb data path (beat and Flower never touch ClickHouse).
Server mode (service URLs set): the same processes against the configured services, with a prefork pool.
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
from dataclasses import dataclass

from app import clickhouse, embedded_redis
from app import constants as c
from app.settings import Settings

CELERY = [sys.executable, "-m", "celery", "-A", "tasks.celery_app:celery_app"]
STOP_TIMEOUT_S = 15.0


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


def commands(settings: Settings, beat_schedule_path: str) -> dict[str, list[str]]:
    """The processes of the stack. Flower reads its credentials from FLOWER_BASIC_AUTH (never argv)."""
    pool = ["--pool", "threads"] if settings.clickhouse_embedded else ["--pool", "prefork"]
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
            "--task-events",
            "--loglevel",
            settings.log_level,
        ],
        "beat": [*CELERY, "beat", "--schedule", beat_schedule_path, "--loglevel", settings.log_level],
        "flower": [
            *CELERY,
            "flower",
            f"--port={settings.flower_port}",
            "--address=127.0.0.1" if settings.env == "dev" else "--address=0.0.0.0",
        ],
    }


def _terminate(children: list[Child], log: Callable[[str], None]) -> None:
    for child in children:
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            child.proc.wait(remaining)
        except subprocess.TimeoutExpired:
            log(f"{child.name} did not stop in time; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()


def run_stack(settings: Settings, log: Callable[[str], None] = print) -> int:
    if clickhouse.owner_is_elsewhere(settings):
        log(f"The embedded ClickHouse at {settings.chdb_path} is already owned by a running worker.")
        return 1
    settings.data_path.mkdir(parents=True, exist_ok=True)
    auth = settings.require_flower_auth()
    generated = auth is None
    if auth is None:
        auth = f"admin:{secrets.token_urlsafe(12)}"
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with embedded_redis.ensure(settings) as redis_url:
            env = dict(os.environ)
            env.update(
                DATA_DIR=str(settings.data_path),
                REDIS_URL=redis_url,
                CELERY_BROKER_URL=settings.celery_broker_url or redis_url,
                FLOWER_BASIC_AUTH=auth,
            )
            cmds = commands(settings, str(settings.data_path / "celerybeat-schedule"))
            children = [
                Child(name, subprocess.Popen(argv, env=env, start_new_session=True))  # noqa: S603
                for name, argv in cmds.items()
            ]
            user, password = auth.split(":", 1)
            shown = password if generated else "(the password in FLOWER_BASIC_AUTH)"
            log(
                f"Stack running ({'embedded' if settings.clickhouse_embedded else 'server'} ClickHouse, "
                f"Redis at {redis_url}).\n"
                f"Flower: http://127.0.0.1:{settings.flower_port}/  login: {user} / {shown}\n"
                "Press Ctrl-C to stop."
            )
            code = 0
            while not stopping:
                dead = [ch for ch in children if ch.proc.poll() is not None]
                if dead:
                    log(f"{dead[0].name} exited with code {dead[0].proc.returncode}; stopping the stack")
                    code = 1
                    break
                time.sleep(0.2)
            log("Stopping...")
            _terminate(children, log)
            return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
