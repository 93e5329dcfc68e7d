"""With ``--json`` stdout holds the JSON document alone; progress, warnings and logs go to stderr.

Given a fresh data directory and no service URLs (embedded defaults), when a benchmark and read commands run as a
user runs them (``python -m app ... --json`` in a subprocess), then their whole stdout parses as one JSON document.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.paths import REPO

pytestmark = pytest.mark.e2e


def _run(data: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CLICKHOUSE_") and k not in ("REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL")
    }
    env["DATA_DIR"] = str(data)
    return subprocess.run(  # noqa: S603 - this interpreter, our own arguments
        [sys.executable, "-m", "app", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s
    )


def test_bench_json_is_all_of_stdout(tmp_path: Path) -> None:
    # The legacy benchmark on 100 users (SQLite, a private chdb and redis-server): the smallest a benchmark runs.
    done = _run(tmp_path, "bench", "legacy", "--quick", "--users", "100", "--json", timeout_s=240)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["users"] == 100


@pytest.mark.parametrize("args", [("user-metrics", "1", "2", "--json"), ("dead-letters", "list", "--json")])
def test_command_json_is_all_of_stdout(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = _run(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), dict)
