"""The local ClickHouse server (``python -m app clickhouse-server``): one command starts a real ClickHouse of the
supported server release (``CLICKHOUSE_SERVER_VERSION``) on loopback, it answers over HTTP to clickhouse-connect,
stops cleanly, and keeps its data across restarts."""

from __future__ import annotations

import shutil
from pathlib import Path

import clickhouse_connect
import pytest

from app.core import constants as c
from app.local import clickhouse_server
from app.local.clickhouse_server import ServerPaths

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not clickhouse_server.LIB_DIR.joinpath("libchdb.so").exists() and shutil.which("npm") is None,
        reason="neither the server library nor npm to fetch it",
    ),
]


def test_start_query_stop_and_restart_keeps_data(tmp_path: Path) -> None:
    paths = ServerPaths(tmp_path / "server")
    url = clickhouse_server.start(paths)
    try:
        assert clickhouse_server.status(paths) == url
        assert clickhouse_server.start(paths) == url  # already running: the same server
        client = clickhouse_connect.get_client(dsn=url)
        assert client.command("SELECT version()").startswith(f"{c.CLICKHOUSE_SERVER_VERSION}.")
        client.command("CREATE DATABASE kept")
        client.command("CREATE TABLE kept.t (x Int64) ENGINE = MergeTree ORDER BY x")
        client.insert("kept.t", [[1], [2], [3]], column_names=["x"])
        client.close()
    finally:
        assert clickhouse_server.stop(paths)
    assert clickhouse_server.status(paths) is None
    assert not clickhouse_server.stop(paths)  # nothing left to stop

    again = clickhouse_server.start(paths)
    try:
        assert again == url  # the same port as before
        client = clickhouse_connect.get_client(dsn=again)
        assert client.command("SELECT sum(x) FROM kept.t") == 6
        client.close()
    finally:
        clickhouse_server.stop(paths)


def test_a_missing_library_without_npm_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on PATH
    with pytest.raises(clickhouse_server.ServerError, match="npm is needed"):
        clickhouse_server.library(tmp_path / "lib")
