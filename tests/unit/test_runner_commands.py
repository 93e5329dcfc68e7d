"""The processes ``python -m app run`` starts: embedded, the engine's owner and an events-only worker beside it
(``INGEST_PROCESSES`` prefork processes on the events queue, no write path); a server's stack, the worker alone."""

from __future__ import annotations

from app.core import constants as c
from app.core.settings import Settings
from app.ops.runner import commands


def _settings(**env: str) -> Settings:
    """Settings from these values alone: a blank URL or cluster is unset, whatever the pass's environment holds."""
    values = {"CLICKHOUSE_URL": "", "CLICKHOUSE_CLUSTER": "", "INGEST_PROCESSES": "2", **env}
    return Settings(DATA_DIR="/tmp/x", **values)  # type: ignore[arg-type]  # noqa: S108


def test_the_embedded_stack_runs_an_events_only_worker_beside_the_owner() -> None:
    cmds = commands(_settings(INGEST_PROCESSES="3"), "/tmp/x/beat")  # noqa: S108
    assert list(cmds) == ["worker", "ingest", "beat", "flower"]
    owner, ingest = cmds["worker"], cmds["ingest"]
    assert owner[owner.index("--pool") + 1] == "threads" and "--without-write-path" not in owner
    assert ingest[ingest.index("-Q") + 1] == c.EVENTS_QUEUE
    assert ingest[ingest.index("--pool") + 1] == "prefork"
    assert ingest[ingest.index("--concurrency") + 1] == "3"
    assert "--without-write-path" in ingest


def test_no_events_only_worker_when_turned_off_or_on_a_server() -> None:
    assert "ingest" not in commands(_settings(INGEST_PROCESSES="0"), "/tmp/x/beat")  # noqa: S108
    server = commands(_settings(CLICKHOUSE_URL="http://127.0.0.1:8123/db"), "/tmp/x/beat")  # noqa: S108
    assert list(server) == ["worker", "beat", "flower"]
