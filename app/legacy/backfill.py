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

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, tuple_

from app.clickhouse import ClickHouse, insert_events
from app.errors import ValidationError
from app.events import Event, MetricType, derive_event_id
from app.legacy import pull
from app.legacy.baseline import excluded_legacy_users
from app.legacy.models import EngagementType, Image, ImageReaction, Model, Post, ReviewReactions, UserEngagement
from app.runtime import Runtime

log = logging.getLogger(__name__)

ENTITIES = ("follows", "uploads", "reactions")
CHUNK = 50_000
ENGINE_CHUNK = 1_000_000
_REACTION_METRIC = {
    ReviewReactions.LIKE: MetricType.REACTION_LIKE,
    ReviewReactions.HEART: MetricType.REACTION_HEART,
    ReviewReactions.LAUGH: MetricType.REACTION_LAUGH,
    ReviewReactions.CRY: MetricType.REACTION_CRY,
}


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _id(*parts: object) -> Any:
    return derive_event_id("legacy", ":".join(str(p) for p in parts))


@dataclass
class Source:
    """One legacy table: its keyset query and how a row becomes events."""

    name: str
    query: Callable[[datetime | None], Any]
    key: Callable[[Any], tuple[Any, ...]]
    key_columns: Callable[[], Any]
    to_events: Callable[[Any], list[Event]]


def _follows(row: Any) -> list[Event]:
    follower, target, created = row
    return [
        Event(
            _id("UserEngagement", follower, target),
            "User",
            target,
            follower,
            target,
            MetricType.FOLLOW,
            1,
            _utc(created),
        )
    ]


def _upload(kind: str) -> Callable[[Any], list[Event]]:
    def convert(row: Any) -> list[Event]:
        entity, owner, created, *deleted = row
        out = [Event(_id(kind, entity), kind, entity, owner, owner, MetricType.UPLOAD, 1, _utc(created))]
        if deleted and deleted[0] is not None:
            out.append(
                Event(_id(kind, entity, "deleted"), kind, entity, owner, owner, MetricType.UPLOAD, -1, _utc(deleted[0]))
            )
        return out

    return convert


def _reaction(row: Any) -> list[Event]:
    rid, image, user, reaction, created, owner = row
    metric = _REACTION_METRIC[ReviewReactions(reaction)]
    return [
        Event(_id("ImageReaction", image, user, metric.value), "Image", image, user, owner, metric, 1, _utc(created))
    ]


def sources(entities: Sequence[str]) -> list[Source]:
    def since_filter(column: Any, since: datetime | None) -> Any:
        return column >= since if since is not None else True

    out: list[Source] = []
    if "follows" in entities:
        e = UserEngagement
        out.append(
            Source(
                "follows",
                lambda since: select(e.userId, e.targetUserId, e.createdAt).where(
                    e.type == EngagementType.FOLLOW, since_filter(e.createdAt, since)
                ),
                lambda row: (row[0], row[1]),
                lambda: tuple_(e.userId, e.targetUserId),
                _follows,
            )
        )
    if "uploads" in entities:
        out.append(
            Source(
                "uploads:Model",
                lambda since: select(Model.id, Model.userId, Model.createdAt, Model.deletedAt).where(
                    since_filter(Model.createdAt, since)
                ),
                lambda row: (row[0],),
                lambda: tuple_(Model.id),
                _upload("Model"),
            )
        )
        out.append(
            Source(
                "uploads:Post",
                lambda since: select(Post.id, Post.userId, Post.createdAt).where(since_filter(Post.createdAt, since)),
                lambda row: (row[0],),
                lambda: tuple_(Post.id),
                _upload("Post"),
            )
        )
        out.append(
            Source(
                "uploads:Image",
                lambda since: select(Image.id, Image.userId, Image.createdAt).where(
                    since_filter(Image.createdAt, since)
                ),
                lambda row: (row[0],),
                lambda: tuple_(Image.id),
                _upload("Image"),
            )
        )
    if "reactions" in entities:
        r = ImageReaction
        out.append(
            Source(
                "reactions",
                lambda since: (
                    select(r.id, r.imageId, r.userId, r.reaction, r.createdAt, Image.userId)
                    .join(Image, Image.id == r.imageId)
                    .where(r.reaction.in_(list(_REACTION_METRIC)), since_filter(r.updatedAt, since))
                ),
                lambda row: (row[0],),
                lambda: tuple_(r.id),
                _reaction,
            )
        )
    return out


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


def _chunks(
    eng: Engine, src: Source, since: datetime | None, after: list[Any] | None, size: int
) -> Iterator[list[Any]]:
    last = after
    with eng.connect() as conn:
        while True:
            query = src.query(since)
            if last is not None:
                query = query.where(src.key_columns() > tuple_(*last))
            rows = list(conn.execute(query.order_by(*src.key_columns().clauses).limit(size)))
            if not rows:
                return
            yield rows
            last = list(src.key(rows[-1]))


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

    ``via``: ``engine`` has ClickHouse read the legacy tables itself (:mod:`app.legacy.pull`), ``python`` streams
    rows through this process, ``auto`` takes the engine when it can reach the legacy database and reads its
    timestamps right, else Python.
    """
    unknown = set(entities) - set(ENTITIES)
    if unknown:
        raise ValidationError(f"unknown entities {sorted(unknown)}; choose from {', '.join(ENTITIES)}")
    if via not in VIA:
        raise ValidationError(f"unknown --via {via!r}; choose from {', '.join(VIA)}")
    report = BackfillReport()
    started = time.perf_counter()
    report.excluded_users = _exclude_legacy_users(rt, eng)
    puller = _puller(rt, eng, list(entities), since, via)
    if puller is not None:
        report.via = "engine"
        _run_engine(rt.clickhouse, puller, list(entities), since, chunk or ENGINE_CHUNK, progress, max_chunks, report)
    else:
        report.via = "python"
        _run_python(rt.clickhouse, eng, entities, since, chunk or CHUNK, progress, max_chunks, report)
    report.seconds = time.perf_counter() - started
    return report


def _exclude_legacy_users(rt: Runtime, eng: Engine) -> int:
    excluded = excluded_legacy_users(eng)
    if excluded:
        from app.excluded import set_excluded

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
        for plan in pull.plans(entities):
            puller.check_clock(plan)
    except Exception as exc:
        if via == "engine":
            raise ValidationError(f"the engine path is not available: {exc}") from exc
        log.warning("backfill through Python: the engine path is not available (%s)", exc)
        return None
    return puller


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
    if any(p.name == "reactions" for p in plans):
        puller.load_owners()
    done_chunks = 0
    try:
        for plan in plans:
            name = _checkpoint_name(plan.name, since, "engine")
            point = _checkpoint(ch, name)
            after, rows_done = (point[0][0], point[1]) if point else (None, 0)
            if point:
                report.resumed_from[plan.name] = str(after)
            report.rows.setdefault(plan.name, 0)
            ranges, _ = puller.ranges(plan, after, chunk)
            for lo, hi in ranges:
                rows, events = puller.run_chunk(plan, lo, hi)
                report.events += events
                rows_done += rows
                _save_checkpoint(ch, name, str(hi), rows_done)
                report.rows[plan.name] += rows
                if progress:
                    progress(plan.name, rows)
                done_chunks += 1
                if max_chunks is not None and done_chunks >= max_chunks:
                    return
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
    done_chunks = 0
    for src in sources(entities):
        name = _checkpoint_name(src.name, since, "python")
        point = _checkpoint(ch, name)
        after, rows_done = (point[0], point[1]) if point else (None, 0)
        if point:
            report.resumed_from[src.name] = ",".join(map(str, after or []))
        report.rows.setdefault(src.name, 0)
        for rows in _chunks(eng, src, since, after, chunk):
            events = [e for row in rows for e in src.to_events(row)]
            insert_events(ch, events)
            rows_done += len(rows)
            _save_checkpoint(ch, name, ",".join(str(k) for k in src.key(rows[-1])), rows_done)
            report.rows[src.name] += len(rows)
            report.events += len(events)
            if progress:
                progress(src.name, len(rows))
            done_chunks += 1
            if max_chunks is not None and done_chunks >= max_chunks:
                return


def reset_checkpoints(ch: ClickHouse) -> None:
    ch.command("TRUNCATE TABLE backfillCheckpoints")
