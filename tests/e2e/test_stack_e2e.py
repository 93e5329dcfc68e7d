"""The real stack as a user runs it: `python -m app run` on embedded defaults, driven through the CLI and Flower.

Given a fresh data directory and no service URLs, when follows are enqueued through the CLI, then the counts
come back through the CLI (via the cache, and via the worker that owns chdb after a cache miss), Flower's API
reports the worker and the executed tasks, and Ctrl-C leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import requests

from app.caches import reactions_cache
from app.core.paths import REPO
from app.stores import read_channel
from tests.stack import ROOT, process_env

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _engine_files(pid: int, data_dir: str) -> list[str]:
    """The files of the embedded engine (its data path and its ownership lock) that process ``pid`` holds open."""
    engine = str(Path(data_dir) / "clickhouse")
    held = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(engine):
            held.append(target)
    return held


def _stack_processes(data_dir: str, argv_marker: str) -> list[int]:
    """The stack's processes (by their DATA_DIR) whose command line holds ``argv_marker``."""
    found = []
    for pid in _processes_with(f"DATA_DIR={data_dir}"):
        try:
            if argv_marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _wait(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


@pytest.fixture()
def stack_env() -> dict[str, str]:
    data = ROOT / "e2e-stack"
    env = process_env("e2e_stack", drop=("REDIS_URL", "CELERY_BROKER_URL"))
    env.update(
        DATA_DIR=str(data),
        FLOWER_PORT=str(_free_port()),
        FLOWER_BASIC_AUTH="ops:s3cret",
        APP_ENV="dev",
        BUFFER_CHECK_INTERVAL_S="1",
        METRICS_PORT=str(_free_port()),
        # Event tasks send task events for a sampled share of their messages (every message costs three
        # publishes): all of them here, so Flower lists the follows below with their arguments.
        EVENT_TASK_EVENTS_SAMPLE="1",
    )
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_run_command_end_to_end(stack_env: dict[str, str]) -> None:
    log_path = ROOT / "e2e-stack.log"
    with open(log_path, "w") as log:
        stack = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "app", "run"],
            env=stack_env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    flower = f"http://127.0.0.1:{stack_env['FLOWER_PORT']}"
    auth = ("ops", "s3cret")
    # Embedded: the engine's owner and the events-only worker (app/ops/runner.py); a server's stack has one worker.
    expected = {"worker"} if stack_env.get("CLICKHOUSE_URL") else {"worker", "ingest"}
    try:

        def all_workers() -> list[str]:
            names = list(requests.get(f"{flower}/api/workers?refresh=1", auth=auth, timeout=5).json())
            return names if {n.split("@")[0] for n in names} >= expected else []

        workers = _wait(all_workers, 90, f"the workers {sorted(expected)} to appear in Flower")
        assert any(w.startswith("worker@") for w in workers)
        assert requests.get(f"{flower}/api/workers", timeout=5).status_code == 401  # auth is enforced
        assert "Flower: http://127.0.0.1:" in log_path.read_text()

        sent = cli(
            stack_env,
            "enqueue",
            "record_follow",
            '{"follower_id": 1, "user_id": 2}',
            '{"follower_id": 3, "user_id": 2}',
            '{"follower_id": 3, "user_id": 2}',
            '{"follower_id": 2, "user_id": 1}',
        )
        assert sent.returncode == 0, sent.stderr
        refused = cli(stack_env, "enqueue", "record_follow", '{"follower_id": 4, "user_id": 4}')
        assert refused.returncode == 2 and "cannot follow themselves" in refused.stderr

        def counts() -> dict[str, dict[str, int]] | None:
            out = cli(stack_env, "user-metrics", "1", "2", "--json")
            data = json.loads(out.stdout)
            return data if data["2"]["followerCount"] == 2 else None

        data = _wait(counts, 60, "follower counts through the CLI")
        assert data["1"]["followerCount"] == 1 and data["1"]["followingCount"] == 1
        assert data["2"]["followingCount"] == 1

        # A cache miss is answered by the worker that owns the embedded ClickHouse.
        url = (Path(stack_env["DATA_DIR"]) / "redis" / "url").read_text().strip()
        redis.Redis.from_url(url).delete("user:metrics:2", "user:metrics:v:2")
        again = json.loads(cli(stack_env, "user-metrics", "2", "--json").stdout)
        assert again["2"]["followerCount"] == 2
        assert cli(stack_env, "migrate").returncode == 0  # routed to the owner, not a second chdb open

        # History, values as of an instant, excluded users and reactions: all answered by the owning worker.
        since = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
        series = json.loads(cli(stack_env, "history", "2", "followerCount", "--since", since, "--json").stdout)
        assert [p["value"] for p in series][-1] == 2 and len(series) == 3
        past = json.loads(cli(stack_env, "user-metrics", "2", "--as-of", "2020-01-01", "--json").stdout)
        assert past["2"]["followerCount"] == 0
        assert cli(stack_env, "excluded-users", "add", "3", "--reason", "farm").returncode == 0
        listed = json.loads(cli(stack_env, "excluded-users", "list", "--json").stdout)
        assert [(e["userId"], e["reason"]) for e in listed] == [(3, "farm")]
        _wait(  # the cached hash of user 2 is recomputed without user 3's follow
            lambda: json.loads(cli(stack_env, "user-metrics", "2", "--json").stdout)["2"]["followerCount"] == 1 or None,
            30,
            "excluded follower no longer counted",
        )
        assert json.loads(cli(stack_env, "reactions", "1", "100", "101", "--json").stdout) == {"100": 0, "101": 0}
        # the miss read user 1's complete set through the worker (empty) and cached it as such
        marks = redis.Redis.from_url(url, decode_responses=True)
        assert marks.hget(reactions_cache.versions_key(1), "all") == "e"
        if not stack_env.get("CLICKHOUSE_URL"):  # embedded: the engine's owner serves reads on the read channel
            assert marks.exists(read_channel.CHANNEL.server)
            # ... and only it holds the engine: the events-only worker (its parent and pool processes) has run
            # event tasks by now without opening a file of it.
            data_dir = stack_env["DATA_DIR"]
            owners = _stack_processes(data_dir, "worker@")
            ingest = _stack_processes(data_dir, "--without-write-path")
            assert owners and any(_engine_files(pid, data_dir) for pid in owners)
            assert len(ingest) >= 2  # the prefork parent and its pool
            assert {pid: _engine_files(pid, data_dir) for pid in ingest} == {pid: [] for pid in ingest}

        tasks = _wait(
            lambda: (
                [
                    t
                    for t in requests.get(f"{flower}/api/tasks", auth=auth, timeout=5).json().values()
                    if t.get("name") == "record_follow" and t.get("state") == "SUCCESS"
                ]
                or None
            ),
            30,
            "executed tasks in Flower",
        )
        assert len(tasks) == 4
        flower_metrics = requests.get(f"{flower}/metrics", auth=auth, timeout=5)
        assert flower_metrics.status_code == 200 and "flower_events_total" in flower_metrics.text
        # The worker's own exporter: the counters operators need, in Prometheus' text format.
        ours = requests.get(f"http://127.0.0.1:{stack_env['METRICS_PORT']}/metrics", timeout=5).text
        assert "usermetrics_events_ingested_total" in ours and "usermetrics_cache_hit_ratio" in ours
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(60)
        except subprocess.TimeoutExpired:
            stack.kill()
            raise
    assert stack.returncode == 0, log_path.read_text()[-3000:]
    time.sleep(0.5)
    assert _processes_with(f"DATA_DIR={stack_env['DATA_DIR']}") == [], "stray processes after Ctrl-C"
