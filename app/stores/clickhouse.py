"""ClickHouse adapter: one client factory for server (HTTP) and embedded (chdb) mode, and the event insert.

Embedded mode has one hard limit: only one process at a time may open a chdb data path. The process that
opens it first takes an exclusive ``flock`` on ``<path>.owner`` for its lifetime; any other process sees the lock
and reaches ClickHouse through the owner (a read task on the ``reads`` queue) instead of failing to open the
engine. ``owner_is_elsewhere`` is that check.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.external import ExternalData

from app.core.errors import (
    ClickHouseUnavailable,
    StoreBusyError,
    TransientError,
    UserMetricsError,
)
from app.core.events import Event
from app.core.settings import Settings
from app.stores import cluster_schema
from app.stores.errors import translate_clickhouse

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENT_TABLE = "entityMetricEvents"
EVENT_COLUMNS = (
    "eventId",
    "entityType",
    "entityId",
    "userId",
    "ownerId",
    "metricType",
    "metricValue",
    "createdAt",
)

_EVENT_INSERT_SETTINGS = {"max_partitions_per_insert_block": 0}
# Most values bound into one query parameter: a server receives parameters as HTTP form fields, and a field
# longer than ``http_max_field_value_size`` (128 KiB) is refused; 1,000 UUIDs or key tuples stay far below.
PARAM_CHUNK = 1000
# The embedded engine has no form-field limit: a set of values is bound in slices this large.
EMBEDDED_PARAM_CHUNK = 50_000


def chunked(values: Sequence[T], size: int = PARAM_CHUNK) -> Iterator[Sequence[T]]:
    """``values`` in slices of at most ``size``, for queries that bind them as one array parameter."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


_owner_handles: dict[Path, IO[str]] = {}
_owner_guard = threading.Lock()


def _owner_file(path: Path) -> Path:
    return path.with_name(path.name + ".owner")


def owner_is_elsewhere(settings: Settings) -> bool:
    """True when another process owns the embedded ClickHouse path (server mode: always False)."""
    path = settings.chdb_path
    if path is None or path in _owner_handles:
        return False
    owner = _owner_file(path)
    if not owner.exists():
        return False
    with open(owner, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _claim_ownership(path: Path) -> None:
    with _owner_guard:
        if path in _owner_handles:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(_owner_file(path), "a+")  # noqa: SIM115 - held open for the process lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise StoreBusyError(
                f"the embedded ClickHouse at {path} is owned by another process (the running worker); "
                "reach it through the worker, or stop the stack first"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        _owner_handles[path] = handle


@contextmanager
def translated_errors() -> Iterator[None]:
    """Raise the client's errors as this project's typed ones (transient or permanent, see ``app.core.errors``)."""
    try:
        yield
    except UserMetricsError:
        raise
    except Exception as exc:
        raise translate_clickhouse(exc) from exc


class ClickHouse:
    """A thread-safe handle on one ClickHouse database; every error it raises is typed (``app.core.errors``).

    The HTTP client is used by one thread at a time per session, and the chdb engine is one per process; a lock
    serialises calls on both, which is what either would do internally anyway.
    """

    def __init__(self, client: Client, database: str, embedded: bool = False, cluster: Cluster | None = None) -> None:
        self.client = client
        self.database = database
        self.embedded = embedded
        self.cluster = cluster
        self.read_rows = 0  # rows read by this handle's queries, where the engine reports them (a server does)
        self._lock = threading.RLock()

    def _run(self, op: Callable[[Client], T]) -> T:
        """``op`` on this handle's server; in cluster mode, on the next node when this one could not be reached.

        Only a request that never reached its node moves (the connection was refused or never opened): a request
        cut off or timed out after it was sent may have run, and is not sent again here (the task or job retries)."""
        with self._lock:
            tries = len(self.cluster.dsns) if self.cluster is not None else 1
            for attempt in range(tries):
                try:
                    with translated_errors():
                        return op(self.client)
                except ClickHouseUnavailable as exc:
                    if self.cluster is None or not _never_reached(exc) or attempt == tries - 1:
                        raise
                    self._fail_over(exc)
            raise AssertionError("unreachable")

    def _fail_over(self, exc: ClickHouseUnavailable) -> None:
        assert self.cluster is not None
        failed = self.cluster.current
        for step in range(1, len(self.cluster.dsns)):
            index = (failed + step) % len(self.cluster.dsns)
            try:
                client = _open(self.cluster.settings, self.cluster.dsns[index], self.database)
            except TransientError:
                continue
            log.warning("ClickHouse node %d does not answer (%s); using node %d", failed + 1, exc, index + 1)
            with contextlib.suppress(Exception):
                self.client.close()
            self.client, self.cluster.current = client, index
            self.cluster.failovers += 1
            return
        raise exc

    @property
    def failovers(self) -> int:
        """How many times this handle moved to another node (a job using node-local scratch tables checks that none
        happened during its run)."""
        return self.cluster.failovers if self.cluster is not None else 0

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._run(lambda client: client.command(sql, parameters=parameters))

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock:
            result: Any = self._run(lambda client: client.query(sql, parameters=parameters))
            if not self.embedded:
                self.read_rows += int((result.summary or {}).get("read_rows", 0))
        return [tuple(row) for row in result.result_rows]

    def truncate(self, table: str) -> None:
        """Empty ``table``; in cluster mode a sharded table's local tables on every node."""
        if self.cluster is None or table not in cluster_schema.SHARDING_KEYS:
            self.command(f"TRUNCATE TABLE {table}")
            return
        for node in self.nodes():
            with contextlib.closing(node):
                node.command(f"TRUNCATE TABLE IF EXISTS {cluster_schema.local_name(table)}")

    def nodes(self) -> list[ClickHouse]:
        """A handle on each node of the cluster (DDL goes node by node), or on this server alone; close each."""
        if self.cluster is None:
            return [self]
        opened: list[ClickHouse] = []
        try:
            for dsn in self.cluster.dsns:
                opened.append(ClickHouse(_open(self.cluster.settings, dsn, self.database), self.database))
        except BaseException:
            for node in opened:
                node.close()
            raise
        return opened

    def rows_for(
        self, sql: str, values: Sequence[Any], type_: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` for a large set of ``values``: ``sql`` names the set as ``{values}``.

        A server gets the set as a temporary table sent with the query (one round trip, however many values: a
        bound array would be capped by the server's form-field limit and split into many round trips). The
        embedded engine, which cannot take one, gets it as a bound array in large slices.
        """
        if not values:
            return []
        if not self.embedded:
            query = sql.replace("{values}", "(SELECT v FROM _values)")
            return self.rows_with_table(query, "_values", f"v {type_}", [(v,) for v in values], parameters)
        out: list[tuple[Any, ...]] = []
        for part in chunked(values, EMBEDDED_PARAM_CHUNK):
            bound = {**(parameters or {}), "_values": list(part)}
            out.extend(self.rows(sql.replace("{values}", f"{{_values:Array({type_})}}"), bound))
        return out

    def rows_with_table(
        self,
        sql: str,
        name: str,
        structure: str,
        rows: Sequence[Sequence[Any]],
        parameters: dict[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` with ``rows`` sent along as the temporary table ``name`` (columns ``structure``, e.g.
        ``"a Int64, b String"``): one round trip however many rows. A server only (the embedded engine takes no
        external data)."""
        if self.embedded:
            raise TypeError("the embedded engine takes no external data")
        data = ExternalData(file_name=name, data=_tsv(rows), structure=structure, fmt="TSV")
        result: Any = self._run(lambda client: client.query(sql, parameters=parameters, external_data=data))
        return [tuple(row) for row in result.result_rows]

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        column_oriented: bool = False,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Insert ``rows`` (or, with ``column_oriented``, one sequence per column) in one block."""
        self._run(
            lambda client: client.insert(
                table,
                cast(Any, rows),
                column_names=list(columns),
                column_oriented=column_oriented,
                settings=settings,
            )
        )

    def close(self) -> None:
        with self._lock:
            self.client.close()


def _tsv(rows: Sequence[Sequence[Any]]) -> bytes:
    """``rows`` as TabSeparated: strings escaped, datetimes in UTC to the second."""

    def cell(value: Any) -> str:
        if isinstance(value, datetime):
            utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
            return utc.strftime("%Y-%m-%d %H:%M:%S")
        text = str(value)
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    return "".join("\t".join(map(cell, row)) + "\n" for row in rows).encode()


@dataclass
class Cluster:
    """Cluster mode: the cluster's name, how it replicates, its nodes and the one in use."""

    name: str
    replication: cluster_schema.Replication
    dsns: list[str] = field(repr=False)  # may carry credentials
    settings: Settings = field(repr=False)
    current: int = 0
    failovers: int = 0


def _open(settings: Settings, dsn: str, db: str) -> Client:
    """A client on one server, its database created if missing."""
    query_settings = cluster_schema.CLUSTER_QUERY_SETTINGS if settings.clickhouse_cluster else {}
    try:
        client = clickhouse_connect.get_client(
            dsn=dsn,
            database="default",
            connect_timeout=settings.clickhouse_timeout_s,
            send_receive_timeout=settings.clickhouse_timeout_s,
            autogenerate_session_id=False,
            settings=dict(query_settings),
        )
    except Exception as exc:
        reason = str(exc).split(" executing HTTP request", 1)[0]
        raise TransientError(f"cannot reach ClickHouse at {_redact(dsn)}/{db}: {reason}") from exc
    with translated_errors():
        client.command(f"CREATE DATABASE IF NOT EXISTS `{_identifier(db)}`")
    client.database = db
    return client


def connect(settings: Settings) -> ClickHouse:
    """Open the configured ClickHouse and make sure the deployment's database exists (``Settings.clickhouse_db``).
    In cluster mode: the first node of CLICKHOUSE_URL that answers."""
    db = settings.clickhouse_db
    if settings.chdb_path is not None:
        try:
            _claim_ownership(settings.chdb_path)
            client = clickhouse_connect.get_client(dsn=settings.clickhouse_dsn)
        except StoreBusyError:
            raise
        except Exception as exc:
            raise TransientError(f"cannot open the embedded ClickHouse at {settings.chdb_path}: {exc}") from exc
        with translated_errors():
            client.command(f"CREATE DATABASE IF NOT EXISTS `{_identifier(db)}`")
        client.database = db
        return ClickHouse(client, db, embedded=True)
    dsns = settings.clickhouse_server_dsns
    if settings.clickhouse_cluster is None:
        return ClickHouse(_open(settings, dsns[0], db), db)
    failure: TransientError | None = None
    for index, dsn in enumerate(dsns):
        try:
            client = _open(settings, dsn, db)
        except TransientError as exc:
            failure = exc
            continue
        cluster = Cluster(settings.clickhouse_cluster, settings.clickhouse_replication, dsns, settings, index)
        return ClickHouse(client, db, cluster=cluster)
    raise TransientError(f"no node of the ClickHouse cluster {settings.clickhouse_cluster} answers: {failure}")


def _identifier(name: str) -> str:
    """A database name safe to quote with backticks (it comes from configuration, never from a request)."""
    if not name or "`" in name or "\\" in name or len(name) > 200:
        raise ValueError(f"invalid ClickHouse database name {name!r}")
    return name


def _redact(dsn: str) -> str:
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return dsn


# What the HTTP client says when a request could not even be sent: the node is down or unreachable.
_NOT_SENT = ("Connection refused", "NewConnectionError", "Failed to establish a new connection", "ConnectTimeout")


def _never_reached(exc: ClickHouseUnavailable) -> bool:
    text = str(exc.__cause__ if exc.__cause__ is not None else exc)  # the client's own text, not shortened
    return exc.code is None and any(marker in text for marker in _NOT_SENT)


def insert_events(ch: ClickHouse, events: Sequence[Event]) -> int:
    """Write a batch of events with one insert. Returns the number of rows written."""
    if not events:
        return 0
    columns: list[list[Any]] = [
        [e.event_id for e in events],
        [e.entity_type for e in events],
        [e.entity_id for e in events],
        [e.user_id for e in events],
        [e.owner_id for e in events],
        [e.metric_type.value for e in events],
        [e.metric_value for e in events],
        [e.created_at for e in events],
    ]
    started = time.perf_counter()
    # A batch may carry history that spans many monthly partitions (a producer catching up); that is data, not
    # the "too many parts" overload the default limit of 100 partitions per block guards against.
    ch.insert(EVENT_TABLE, columns, EVENT_COLUMNS, column_oriented=True, settings=_EVENT_INSERT_SETTINGS)
    log.debug("inserted %d events in %.1f ms", len(events), (time.perf_counter() - started) * 1000)
    return len(events)
