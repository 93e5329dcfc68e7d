"""Server mode as a user configures it: the database in CLICKHOUSE_URL is the one used and created when missing,
credentials ride in the URL, an unreachable server is one clear line. The server tests run when the session has
a ClickHouse server (``CLICKHOUSE_URL``; ``.ci/run``'s second pass starts one with ``python -m app
clickhouse-server start``)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from urllib.parse import urlsplit

import pytest

from app.core.paths import REPO
from app.core.settings import Settings
from app.derived.metrics_from_log import compute_user_metrics
from tests.stack import CLICKHOUSE_SERVER, ROOT, clickhouse_env, process_env, wait_events

needs_server = pytest.mark.skipif(CLICKHOUSE_SERVER is None, reason="no ClickHouse server configured")


def test_the_urls_database_wins_and_the_client_connects_without_it() -> None:
    s = Settings(CLICKHOUSE_URL="https://u:p%40ss@ch.example:8443/tenant_a?compress=1", CLICKHOUSE_DATABASE="other")
    assert s.clickhouse_db == "tenant_a"
    assert s.clickhouse_server_dsn == "https://u:p%40ss@ch.example:8443?compress=1"
    assert Settings(CLICKHOUSE_URL="http://ch:8123", CLICKHOUSE_DATABASE="other").clickhouse_db == "other"
    assert Settings(CLICKHOUSE_URL="http://ch:8123/", CLICKHOUSE_DATABASE="other").clickhouse_db == "other"
    assert Settings(CLICKHOUSE_URL="chdb:///tmp/x", CLICKHOUSE_DATABASE="other").clickhouse_db == "other"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=180
    )


def _tables(database: str) -> set[str]:
    query = f"SELECT name FROM system.tables WHERE database = '{database}' FORMAT TSV"
    with urllib.request.urlopen(f"{CLICKHOUSE_SERVER}/", data=query.encode(), timeout=30) as reply:  # noqa: S310
        return set(reply.read().decode().split())


@needs_server
def test_migrate_creates_the_database_named_in_the_url_with_credentials_in_the_url() -> None:
    # Given two deployments pointed at two databases of one server, the user name in the URL
    a, b = clickhouse_env("tenant_a")["CLICKHOUSE_URL"], clickhouse_env("tenant_b")["CLICKHOUSE_URL"]
    decoy = urlsplit(clickhouse_env("decoy")["CLICKHOUSE_URL"]).path.strip("/")
    for url in (a, b):
        parts = urlsplit(url)
        env = process_env("unused", drop=("CLICKHOUSE_URL",))
        env.update(
            CLICKHOUSE_URL=f"{parts.scheme}://default:@{parts.netloc}{parts.path}",
            CLICKHOUSE_DATABASE=decoy,
            DATA_DIR=str(ROOT / "server-mode"),
        )
        # When each is migrated (its database does not exist yet)
        done = _cli(env, "migrate")
        assert done.returncode == 0, done.stderr
    # Then each database has its own tables, and neither went to CLICKHOUSE_DATABASE
    db_a, db_b = urlsplit(a).path.strip("/"), urlsplit(b).path.strip("/")
    assert "entityMetricEvents" in _tables(db_a) and "entityMetricEvents" in _tables(db_b)
    assert _tables(decoy) == set()


def test_an_unreachable_server_is_one_clear_line_and_exit_1() -> None:
    env = process_env("unused", drop=("CLICKHOUSE_URL",))
    env.update(
        CLICKHOUSE_URL="http://someone:secret@127.0.0.1:9/usermetrics",
        CLICKHOUSE_TIMEOUT_S="1",
        DATA_DIR=str(ROOT / "server-mode"),
    )
    done = _cli(env, "migrate")
    assert done.returncode == 1
    assert "error: cannot reach ClickHouse at http://***@127.0.0.1:9/usermetrics" in done.stderr
    assert "secret" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.usefixtures("worker")
def test_one_flush_of_thousands_of_distinct_entities_binds_its_parameters_in_chunks(clean, producer) -> None:  # type: ignore[no-untyped-def]
    # A server receives bound parameters as HTTP form fields (at most 128 KiB each): 6,000 event ids or entity keys
    # in one array were refused before the lookups were chunked.
    items = [
        {
            "type": "record_entity_metric",
            "entity_type": "Model",
            "entity_id": 10_000 + i,
            "metric_type": "Download",
            "metric_value": 1,
            "user_id": 7,
            "owner_id": 1 + i % 3,
        }
        for i in range(6000)
    ]
    producer.record_events(items)
    wait_events(clean, 6000, timeout_s=120)
    got = compute_user_metrics(clean.clickhouse, [1, 2, 3], weights=clean.weights, window=clean.window)
    assert [got[u].download_count for u in (1, 2, 3)] == [2000, 2000, 2000]


def test_rows_sent_as_a_temporary_table_arrive_as_they_were(rt) -> None:  # type: ignore[no-untyped-def]
    """``rows_with_table`` (the cluster timeline's diff sends its keys this way): strings with tabs, newlines and
    backslashes and datetimes with or without a zone arrive unchanged; the embedded engine refuses it clearly."""
    from datetime import UTC, datetime

    rows = [(1, "a\tb", datetime(2026, 1, 2, 3, tzinfo=UTC)), (2, "c\\nd\ne", datetime(2026, 1, 2, 4))]
    sql = "SELECT n, s, t FROM _sent ORDER BY n"
    if rt.clickhouse.embedded:
        with pytest.raises(TypeError, match="external data"):
            rt.clickhouse.rows_with_table(sql, "_sent", "n Int64, s String, t DateTime('UTC')", rows)
        return
    got = rt.clickhouse.rows_with_table(sql, "_sent", "n Int64, s String, t DateTime('UTC')", rows)
    assert [(n, s, t.replace(tzinfo=UTC)) for n, s, t in got] == [
        (1, "a\tb", datetime(2026, 1, 2, 3, tzinfo=UTC)),
        (2, "c\\nd\ne", datetime(2026, 1, 2, 4, tzinfo=UTC)),
    ]
