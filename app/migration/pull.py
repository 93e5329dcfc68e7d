"""The backfill's fast path: ClickHouse reads the legacy tables itself and writes the events in one statement.

``INSERT INTO entityMetricEvents SELECT ... FROM postgresql(...)`` (or ``sqlite(...)`` for the embedded legacy file)
moves a chunk of legacy rows without a single row passing through Python: the engine reads PostgreSQL with
``COPY``, derives each event id in SQL (the same ``uuid5`` as :func:`app.core.events.derive_event_id`, which a test
checks row for row against the Python path) and inserts in large blocks.

Chunks are key ranges (``lo < key <= hi``), sized from the table's key span and row count; the range's upper bound
is the checkpoint. A reaction's owner comes from a ``Join``-engine table of image owners loaded once per run
(``joinGet``), so the image table is read once, not once per chunk.

ClickHouse reads ``timestamptz`` as text in the PostgreSQL session's time zone and drops the offset: outside UTC
every instant is off by the zone's offset at that instant (Europe/London is right in winter, an hour off in
summer). Before the first chunk the engine path refuses (the caller falls back to the Python path) unless
PostgreSQL's ``TimeZone`` setting is UTC, and, as a second guard, unless both drivers read the same instant for one
row of every table it uses.

With ``--since``, a row is taken when any of its times is at or after ``since``: a model created before it and
removed after it is taken (its removal is new; its upload event is rewritten with the same id, which changes
nothing).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, exists, func, literal, or_, select, text

from app.core.events import as_utc, uuid5_sql
from app.core.settings import Settings
from app.legacy.models import (
    REACTION_METRIC,
    EngagementType,
    Image,
    ImageReaction,
    Model,
    Post,
    UserEngagement,
)
from app.stores.clickhouse import EVENT_COLUMNS, EVENT_TABLE, ClickHouse

REACTIONS = {reaction: metric.value for reaction, metric in REACTION_METRIC.items()}
OWNERS_TABLE = "backfillImageOwners"


class EngineUnavailable(Exception):
    """The engine cannot read this legacy database (or would read it wrong); use the Python path."""


def event_id_sql(name: str) -> str:
    """SQL for ``derive_event_id("legacy", <name>)``."""
    return uuid5_sql(f"concat('legacy/', {name})")


def _key_name(*parts: str) -> str:
    """``'Kind:' || a || ':' || b``: the legacy key as :func:`app.migration.backfill._id` spells it."""
    pieces = [f"'{parts[0]}'"]
    for p in parts[1:]:
        pieces += ["':'", p if p.startswith("'") else f"toString({p})"]
    return f"concat({', '.join(pieces)})"


@dataclass(frozen=True)
class Remote:
    """How the engine reaches the legacy database: a table function and its (bound) connection parameters."""

    kind: str  # "postgresql" | "sqlite"
    params: dict[str, Any]

    def table(self, name: str) -> str:
        if self.kind == "postgresql":
            return (
                f"postgresql({{pg_host:String}}, {{pg_db:String}}, '{name}', {{pg_user:String}}, "
                "{pg_password:String}, {pg_schema:String})"
            )
        return f"sqlite({{sqlite_path:String}}, '{name}')"

    def ts(self, column: str) -> str:
        """A legacy timestamp column as ``DateTime64(3, 'UTC')`` (SQLite stores text)."""
        if self.kind == "postgresql":
            return f"toDateTime64({column}, 3, 'UTC')"
        return f"toDateTime64(parseDateTime64BestEffortOrNull({column}, 6, 'UTC'), 3, 'UTC')"


def remote_for(eng: Engine, settings: Settings) -> Remote | None:
    """The engine's view of the legacy database, or None when it cannot reach it."""
    url = eng.url
    backend = url.get_backend_name()
    if backend == "postgresql":
        return Remote(
            "postgresql",
            {
                "pg_host": f"{url.host or 'localhost'}:{url.port or 5432}",
                "pg_db": url.database or "postgres",
                "pg_user": url.username or "postgres",
                "pg_password": url.password or "",
                "pg_schema": str(url.query.get("schema", "public")),
            },
        )
    if backend == "sqlite" and settings.chdb_path is not None and url.database not in (None, "", ":memory:"):
        # Only an engine on this host can open the file: embedded ClickHouse.
        return Remote("sqlite", {"sqlite_path": str(url.database)})
    return None


# PostgreSQL TimeZone values that are UTC at every instant (compared in lower case, without an ``etc/`` prefix).
UTC_ZONES = frozenset(
    {"utc", "uct", "gmt", "gmt0", "gmt+0", "gmt-0", "greenwich", "universal", "zulu", "z", "utc0", "+00", "+00:00"}
)


def is_utc_zone(zone: str) -> bool:
    name = zone.strip().lower()
    return name.removeprefix("etc/") in UTC_ZONES


@dataclass(frozen=True)
class Plan:
    """One legacy table on the engine path: its range key, the rows it counts and the events it writes."""

    name: str
    model: Any
    key: Any  # the SQLAlchemy column the chunks range over
    since_columns: tuple[str, ...]  # with ``--since``, a row is taken when any of these is at or after it
    filters: tuple[Any, ...]  # SQLAlchemy filters of the rows that make events (the row counts)
    selects: Callable[[Remote, str], list[str]]  # SELECTs producing event rows, given the chunk filter

    def where(self, since: datetime | None) -> list[Any]:
        out = list(self.filters)
        if since is not None:
            out.append(or_(*(getattr(self.model, c) >= since for c in self.since_columns)))
        return out


def _follows(r: Remote, cond: str) -> list[str]:
    name = _key_name("UserEngagement", "userId", "targetUserId")
    return [
        f"SELECT {event_id_sql(name)}, 'User', targetUserId, userId, targetUserId, 'Follow', 1, {r.ts('createdAt')} "  # noqa: S608 - identifiers are constants; values are bound
        f"FROM {r.table('UserEngagement')} WHERE type = '{EngagementType.FOLLOW.value}' AND {cond}"
    ]


def _uploads(kind: str, deletable: bool) -> Callable[[Remote, str], list[str]]:
    def selects(r: Remote, cond: str) -> list[str]:
        out = [
            f"SELECT {event_id_sql(_key_name(kind, 'id'))}, '{kind}', id, userId, userId, 'Upload', 1, "  # noqa: S608 - identifiers are constants; values are bound
            f"{r.ts('createdAt')} FROM {r.table(kind)} WHERE {cond}"
        ]
        if deletable:
            removal = event_id_sql(_key_name(kind, "id", "'deleted'"))
            out.append(
                f"SELECT {removal}, '{kind}', id, userId, userId, 'Upload', -1, {r.ts('deletedAt')} "  # noqa: S608 - identifiers are constants; values are bound
                f"FROM {r.table(kind)} WHERE deletedAt IS NOT NULL AND {cond}"
            )
        return out

    return selects


def _reactions(r: Remote, cond: str) -> list[str]:
    metric = "transform(reaction, {legacy_reactions:Array(String)}, {metric_types:Array(String)}, '')"
    name = _key_name("ImageReaction", "imageId", "userId", metric)
    return [
        f"SELECT {event_id_sql(name)}, 'Image', imageId, userId, owner, {metric}, 1, {r.ts('createdAt')} "  # noqa: S608 - identifiers are constants; values are bound
        f"FROM (SELECT *, joinGetOrNull({{owners_table:String}}, 'userId', imageId) AS owner "
        f"FROM {r.table('ImageReaction')} WHERE reaction IN {{legacy_reactions:Array(String)}} AND {cond}) "
        "WHERE owner IS NOT NULL"
    ]


def plans(entities: list[str]) -> list[Plan]:
    out: list[Plan] = []
    if "follows" in entities:
        e = UserEngagement
        follow = (e.type == EngagementType.FOLLOW,)
        out.append(Plan("follows", e, e.userId, ("createdAt",), follow, _follows))
    if "uploads" in entities:
        out.append(Plan("uploads:Model", Model, Model.id, ("createdAt", "deletedAt"), (), _uploads("Model", True)))
        out.append(Plan("uploads:Post", Post, Post.id, ("createdAt",), (), _uploads("Post", False)))
        out.append(Plan("uploads:Image", Image, Image.id, ("createdAt",), (), _uploads("Image", False)))
    if "reactions" in entities:
        r = ImageReaction
        # A reaction on an image that no longer exists makes no event (no owner): it is not counted either.
        counted = (r.reaction.in_(list(REACTIONS)), exists().where(Image.id == r.imageId))
        out.append(Plan("reactions", r, r.id, ("updatedAt",), counted, _reactions))
    return out


class Puller:
    """Runs the engine path for one backfill: parameters, the owners table, the clock check, the chunks."""

    def __init__(self, ch: ClickHouse, eng: Engine, remote: Remote, since: datetime | None) -> None:
        self.ch, self.eng, self.remote, self.since = ch, eng, remote, since
        # A name per run: a run that died leaves its own table behind, never one another run is reading.
        self.owners_table = f"{OWNERS_TABLE}_{uuid.uuid4().hex[:12]}"
        self.params: dict[str, Any] = {
            **remote.params,
            "legacy_reactions": [r.value for r in REACTIONS],
            "metric_types": list(REACTIONS.values()),
            "owners_table": f"{ch.database}.{self.owners_table}",
        }

    def _cond(self, plan: Plan, lo: int, hi: int) -> str:
        column = plan.key.key
        cond = f"{column} > {int(lo)} AND {column} <= {int(hi)}"
        if self.since is not None:
            taken = " OR ".join(f"{self.remote.ts(c)} >= {{since:DateTime64(3, 'UTC')}}" for c in plan.since_columns)
            cond += f" AND ({taken})"
        return cond

    def check_time_zone(self) -> None:
        """Refuse unless PostgreSQL's ``TimeZone`` is UTC (the engine would read other instants off by the offset)."""
        if self.remote.kind != "postgresql":
            return
        with self.eng.connect() as conn:
            zone = str(conn.execute(text("SELECT current_setting('TimeZone')")).scalar_one())
        if not is_utc_zone(zone):
            raise EngineUnavailable(
                f"PostgreSQL's TimeZone is {zone!r}; ClickHouse reads timestamptz in it and drops the offset "
                "(set it to UTC: ALTER DATABASE ... SET TimeZone = 'UTC')"
            )

    def check_clock(self, plan: Plan) -> None:
        """Refuse unless the engine and the driver read the same instant for one row of the table."""
        m = plan.model
        pk = list(m.__table__.primary_key.columns)
        with self.eng.connect() as conn:
            row = conn.execute(select(m.createdAt, *pk).order_by(*pk).limit(1)).first()
        if row is None:
            return
        created, *key = row
        expected = as_utc(created).replace(microsecond=created.microsecond // 1000 * 1000)
        where = " AND ".join(f"{c.key} = {int(k)}" for c, k in zip(pk, key, strict=True))
        got = self.ch.rows(
            f"SELECT {self.remote.ts('createdAt')} FROM {self.remote.table(m.__tablename__)} "  # noqa: S608
            f"WHERE {where} LIMIT 1",
            self.params,
        )
        if not got or got[0][0].astimezone(UTC) != expected:
            seen = got[0][0] if got else None
            raise EngineUnavailable(
                f"ClickHouse reads {m.__tablename__}.createdAt of key {key} as {seen}, the driver as {expected} "
                "(is the PostgreSQL TimeZone UTC?)"
            )

    def load_owners(self) -> None:
        table = self.owners_table
        self.ch.command(f"DROP TABLE IF EXISTS {table}")
        self.ch.command(f"CREATE TABLE {table} (id Int64, userId Int64) ENGINE = Join(ANY, LEFT, id)")
        self.ch.command(
            f"INSERT INTO {table} SELECT id, userId FROM {self.remote.table('Image')}",  # noqa: S608
            self.params,
        )

    def drop_owners(self) -> None:
        self.ch.command(f"DROP TABLE IF EXISTS {self.owners_table}")

    def ranges(self, plan: Plan, after: int | None, chunk: int) -> tuple[list[tuple[int, int]], int]:
        """Key ranges of about ``chunk`` rows after ``after``, and the rows they hold."""
        with self.eng.connect() as conn:
            lo, hi, n = conn.execute(
                select(func.min(plan.key), func.max(plan.key), func.count()).where(*plan.where(self.since))
            ).one()
        if n == 0 or hi is None:
            return [], 0
        start = int(lo) - 1 if after is None else max(int(after), int(lo) - 1)
        span = max(1, math.ceil(chunk * (int(hi) - int(lo) + 1) / n))
        out, at = [], start
        while at < int(hi):
            out.append((at, min(at + span, int(hi))))
            at += span
        return out, int(n)

    def counts(self, plan: Plan, lo: int, hi: int) -> tuple[int, int]:
        """Legacy rows in a key range and the events they make (a removed model makes two)."""
        m = plan.model
        second = func.count(m.deletedAt) if plan.name == "uploads:Model" else literal(0)
        with self.eng.connect() as conn:
            rows, extra = conn.execute(
                select(func.count(), second).where(plan.key > lo, plan.key <= hi, *plan.where(self.since))
            ).one()
        return int(rows), int(rows) + int(extra or 0)

    def run_chunk(self, plan: Plan, lo: int, hi: int) -> tuple[int, int]:
        """Insert one key range's events; returns the legacy rows it covered and the events written."""
        params = {**self.params, "since": self.since} if self.since is not None else self.params
        for sql in plan.selects(self.remote, self._cond(plan, lo, hi)):
            self.ch.command(f"INSERT INTO {EVENT_TABLE} ({', '.join(EVENT_COLUMNS)}) {sql}", params)
        return self.counts(plan, lo, hi)
