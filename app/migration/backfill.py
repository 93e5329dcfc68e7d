"""``python -m app backfill``: legacy rows → events in ClickHouse, idempotent and resumable.

Every event id is derived from the legacy row's key (``uuid5``), so running twice, or again after a crash,
writes the same events: the read side counts each event id once and a state key's latest event wins, so the
results do not change (and a legacy reaction that live events already cover is one more assertion of the same
key, never a second count). Rows are read in primary-key order in chunks (keyset pagination); after each chunk is
in ClickHouse a checkpoint is stored there (``backfillCheckpoints``, sql/0005), and the next run resumes after it.

Mapping: ``UserEngagement`` Follow → Follow (Hide/Block have no metric); ``Model``/``Post``/``Image`` → Upload (a
deleted model gets its removal too); ``ImageReaction`` Like/Heart/Laugh/Cry → the reaction on, owner = the image's
uploader (Dislike has no flag); deleted and banned users → the excluded list.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import LockError
from redis.lock import Lock
from sqlalchemy import Engine, select

from app.core import constants as c
from app.core import failpoints
from app.core.errors import ValidationError
from app.legacy.baseline import excluded_legacy_users
from app.legacy.models import (
    User,
)
from app.migration import pull
from app.migration import rows as legacy_rows
from app.stores.clickhouse import ClickHouse, insert_events
from app.stores.runtime import Runtime

log = logging.getLogger(__name__)

ENTITIES = ("follows", "uploads", "reactions")
CHUNK = 50_000
ENGINE_CHUNK = 1_000_000
# One backfill at a time (``lock:backfill``), renewed after every chunk: a dead run frees it within this long.
LOCK_TTL_S = 300


@dataclass
class BackfillReport:
    rows: dict[str, int] = field(default_factory=dict)
    events: int = 0
    seconds: float = 0.0
    resumed_from: dict[str, str] = field(default_factory=dict)
    excluded_users: int = 0
    via: str = "python"

    @property
    def rows_per_s(self) -> float:
        return sum(self.rows.values()) / self.seconds if self.seconds else 0.0


def _checkpoint(ch: ClickHouse, name: str) -> tuple[list[Any], int] | None:
    rows = ch.rows("SELECT lastKey, rowsDone FROM backfillCheckpoints FINAL WHERE name = {name:String}", {"name": name})
    if not rows:
        return None
    return [int(k) for k in str(rows[0][0]).split(",")], int(rows[0][1])


VIA = ("auto", "engine", "python")


def backfill(
    rt: Runtime,
    eng: Engine,
    entities: Sequence[str] = ENTITIES,
    since: datetime | None = None,
    chunk: int | None = None,
    progress: Callable[[str, int], None] | None = None,
    max_chunks: int | None = None,
    via: str = "auto",
) -> BackfillReport:
    """Copy legacy rows into ClickHouse as events. ``max_chunks`` stops early (a crash, for tests).

    ``via``: ``engine`` has ClickHouse read the legacy tables itself (:mod:`app.migration.pull`), ``python`` streams
    rows through this process, ``auto`` takes the engine when it can reach the legacy database and reads its
    timestamps right, else Python.
    """
    unknown = set(entities) - set(ENTITIES)
    if unknown:
        raise ValidationError(f"unknown entities {sorted(unknown)}; choose from {', '.join(ENTITIES)}")
    if via not in VIA:
        raise ValidationError(f"unknown --via {via!r}; choose from {', '.join(VIA)}")
    lock = Lock(rt.redis, c.LOCK_KEY.format(name="backfill"), timeout=LOCK_TTL_S)
    if not lock.acquire(blocking=False):
        raise ValidationError("another backfill is running (lock:backfill); run this one when it has finished")
    try:
        report = BackfillReport()
        started = time.perf_counter()
        report.excluded_users = _exclude_legacy_users(rt, eng)
        puller = _puller(rt, eng, list(entities), since, via)

        def progress_and_keep_lock(name: str, n: int) -> None:
            lock.reacquire()  # the lock lives as long as chunks keep coming
            if progress:
                progress(name, n)

        if puller is not None:
            report.via = "engine"
            _run_engine(
                rt.clickhouse,
                puller,
                list(entities),
                since,
                chunk or ENGINE_CHUNK,
                progress_and_keep_lock,
                max_chunks,
                report,
            )
        else:
            report.via = "python"
            _run_python(rt.clickhouse, eng, entities, since, chunk or CHUNK, progress_and_keep_lock, max_chunks, report)
        report.seconds = time.perf_counter() - started
        return report
    finally:
        with contextlib.suppress(LockError):
            lock.release()


def _exclude_legacy_users(rt: Runtime, eng: Engine) -> int:
    excluded = excluded_legacy_users(eng)
    if excluded:
        from app.write.excluded import set_excluded

        by_reason: dict[str, list[int]] = {}
        for u, reason in excluded.items():
            by_reason.setdefault(reason, []).append(u)
        for reason, users in by_reason.items():
            set_excluded(rt, users, excluded=True, reason=reason)
    return len(excluded)


def _checkpoint_name(src: str, since: datetime | None, via: str) -> str:
    name = f"{src}|since={since.isoformat() if since else '-'}"
    return name if via == "python" else f"{name}|via={via}"


def _save_checkpoint(ch: ClickHouse, name: str, key: str, rows_done: int) -> None:
    ch.insert(
        "backfillCheckpoints",
        [(name, key, rows_done, datetime.now(UTC))],
        ["name", "lastKey", "rowsDone", "updatedAt"],
    )


def _puller(rt: Runtime, eng: Engine, entities: list[str], since: datetime | None, via: str) -> pull.Puller | None:
    if via == "python":
        return None
    remote = pull.remote_for(eng, rt.settings)
    try:
        if remote is None:
            raise pull.EngineUnavailable(f"ClickHouse cannot read a {eng.url.get_backend_name()} legacy database")
        puller = pull.Puller(rt.clickhouse, eng, remote, since)
        puller.check_time_zone()
        for plan in pull.plans(entities):
            puller.check_clock(plan)
    except Exception as exc:
        if via == "engine":
            raise ValidationError(f"the engine path is not available: {exc}") from exc
        log.warning("backfill through Python: the engine path is not available (%s)", exc)
        return None
    return puller


@dataclass
class _Chunk:
    """One chunk written: legacy rows read, events written, and the key to resume after."""

    rows: int
    events: int
    key: list[Any]


_Chunks = Callable[[list[Any] | None], Iterator[_Chunk]]  # the chunks after a resume key (None: from the start)


def _run_checkpointed(
    ch: ClickHouse,
    work: list[tuple[str, str, _Chunks]],
    progress: Callable[[str, int], None] | None,
    max_chunks: int | None,
    report: BackfillReport,
) -> None:
    """For each (entity, checkpoint name, chunks): resume after its checkpoint, write chunk after chunk, and save
    the checkpoint after each (a crash repeats at most one chunk, which is idempotent)."""
    done_chunks = 0
    for entity, name, chunks in work:
        point = _checkpoint(ch, name)
        after, rows_done = point if point else (None, 0)
        if after is not None:
            report.resumed_from[entity] = ",".join(map(str, after))
        report.rows.setdefault(entity, 0)
        for chunk in chunks(after):
            rows_done += chunk.rows
            _save_checkpoint(ch, name, ",".join(str(k) for k in chunk.key), rows_done)
            report.rows[entity] += chunk.rows
            report.events += chunk.events
            if progress:
                progress(entity, chunk.rows)
            done_chunks += 1
            if max_chunks is not None and done_chunks >= max_chunks:
                return


def _run_engine(
    ch: ClickHouse,
    puller: pull.Puller,
    entities: list[str],
    since: datetime | None,
    chunk: int,
    progress: Callable[[str, int], None] | None,
    max_chunks: int | None,
    report: BackfillReport,
) -> None:
    plans = pull.plans(entities)

    def chunks_of(plan: pull.Plan) -> _Chunks:
        def chunks(after: list[Any] | None) -> Iterator[_Chunk]:
            ranges, _ = puller.ranges(plan, after[0] if after else None, chunk)
            for lo, hi in ranges:
                rows, events = puller.run_chunk(plan, lo, hi)
                yield _Chunk(rows, events, [hi])

        return chunks

    if any(p.name == "reactions" for p in plans):
        puller.load_owners()
    failpoints.hit(failpoints.BACKFILL_OWNERS_LOADED)
    try:
        work = [(p.name, _checkpoint_name(p.name, since, "engine"), chunks_of(p)) for p in plans]
        _run_checkpointed(ch, work, progress, max_chunks, report)
    finally:
        puller.drop_owners()


def _run_python(
    ch: ClickHouse,
    eng: Engine,
    entities: Sequence[str],
    since: datetime | None,
    chunk: int,
    progress: Callable[[str, int], None] | None,
    max_chunks: int | None,
    report: BackfillReport,
) -> None:
    def chunks_of(src: legacy_rows.Source) -> _Chunks:
        def chunks(after: list[Any] | None) -> Iterator[_Chunk]:
            for rows in legacy_rows.chunks(eng, src, since, after, chunk):
                events = [e for row in rows for e in src.to_events(row)]
                insert_events(ch, events)
                yield _Chunk(len(rows), len(events), list(src.key(rows[-1])))

        return chunks

    work = [
        (src.name, _checkpoint_name(src.name, since, "python"), chunks_of(src)) for src in legacy_rows.sources(entities)
    ]
    _run_checkpointed(ch, work, progress, max_chunks, report)


def reset_checkpoints(ch: ClickHouse) -> None:
    ch.truncate("backfillCheckpoints")


def warm_caches(rt: Runtime, eng: Engine, per_call: int = 2000) -> int:
    """Fill the metric caches of every legacy user (what the first reads after a cutover would do); returns how
    many users."""
    from app.read.metrics_service import UserMetricsQueryService

    with eng.connect() as conn:
        ids = [int(u) for (u,) in conn.execute(select(User.id))]
    service = UserMetricsQueryService(rt)
    for i in range(0, len(ids), per_call):
        service.get_user_metrics(ids[i : i + per_call])
    return len(ids)
