"""``python -m app compare``: every user metric and every user's reactions, PostgreSQL (the legacy aggregation)
against ClickHouse (and the caches), with a reason class for each mismatch where one can be told.

Reason classes: ``missing events`` (ClickHouse has no event of the user at all: not backfilled), ``deleted users``
(the user is deleted in the legacy database), ``excluded users`` (ClickHouse excludes users the legacy data does not
mark deleted or banned), ``timing`` (ClickHouse received events of the user after the comparison started), else
``unexplained``. Unexplained mismatches make the command exit non-zero.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from app.caches import metrics_cache
from app.core.metrics import UserMetrics
from app.legacy.baseline import FIELDS, excluded_legacy_users, legacy_reactions, legacy_user_metrics
from app.legacy.models import ImageReaction, User
from app.read.clickhouse_sources import clickhouse_metrics_source, clickhouse_reaction_source
from app.stores.runtime import Runtime

EXAMPLES = 5
BATCH = 2000


@dataclass
class MetricComparison:
    metric: str
    compared: int = 0
    matches: int = 0
    mismatches: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class CompareReport:
    started: str
    users: int = 0
    metrics: dict[str, MetricComparison] = field(default_factory=dict)
    cache_mismatches: int = 0
    cache_examples: list[int] = field(default_factory=list)
    reaction_users: int = 0
    reaction_pairs: int = 0
    reaction_mismatches: int = 0
    reaction_examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unexplained(self) -> int:
        return sum(m.reasons.get("unexplained", 0) for m in self.metrics.values()) + self.reaction_mismatches

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "users": self.users,
            "unexplained": self.unexplained,
            "metrics": {name: vars(m) for name, m in self.metrics.items()},
            "cache": {"mismatches": self.cache_mismatches, "examples": self.cache_examples},
            "reactions": {
                "users": self.reaction_users,
                "pairs": self.reaction_pairs,
                "mismatches": self.reaction_mismatches,
                "examples": self.reaction_examples,
            },
        }


def _pick_users(eng: Engine, users: Sequence[int] | None, sample: int | None, rnd: random.Random) -> list[int]:
    if users:
        return sorted(set(users))
    with eng.connect() as conn:
        ids = [int(u) for (u,) in conn.execute(select(User.id))]
    if sample is not None and sample < len(ids):
        return sorted(rnd.sample(ids, sample))
    return ids


def compare(
    rt: Runtime,
    eng: Engine,
    users: Sequence[int] | None = None,
    sample: int | None = None,
    metrics: Sequence[str] | None = None,
    reactions_sample: int = 200,
    seed: int | None = None,
) -> CompareReport:
    started = datetime.now(UTC)
    rnd = random.Random(seed)  # noqa: S311 - sampling, not security
    picked = _pick_users(eng, users, sample, rnd)
    wanted = [m for m in FIELDS if not metrics or m in metrics]
    report = CompareReport(started=started.isoformat(), users=len(picked))
    report.metrics = {m: MetricComparison(m) for m in wanted}
    legacy_excluded = excluded_legacy_users(eng)
    deleted = {u for u, why in legacy_excluded.items() if why.endswith("deleted")}
    ch_excluded = {int(u) for (u,) in rt.clickhouse.rows("SELECT userId FROM excludedUsers FINAL WHERE excluded = 1")}
    extra_excluded = bool(ch_excluded - set(legacy_excluded))
    source = clickhouse_metrics_source(rt)
    for i in range(0, len(picked), BATCH):
        batch = picked[i : i + BATCH]
        legacy = legacy_user_metrics(eng, batch)
        fresh = source(batch)
        cached = metrics_cache.read(rt.redis, batch)
        with_events = _users_with_events(rt, batch)
        late = _users_with_events(rt, batch, inserted_after=started)
        for u in batch:
            got = fresh[u].to_json()
            for m in wanted:
                cmp = report.metrics[m]
                cmp.compared += 1
                if got[m] == legacy[u][m]:
                    cmp.matches += 1
                    continue
                cmp.mismatches += 1
                reason = (
                    "missing events"
                    if u not in with_events
                    else "deleted users"
                    if u in deleted
                    else "timing"
                    if u in late
                    else "excluded users"
                    if extra_excluded and m in ("followerCount", "reactionCount")
                    else "unexplained"
                )
                cmp.reasons[reason] = cmp.reasons.get(reason, 0) + 1
                if len(cmp.examples) < EXAMPLES:
                    cmp.examples.append({"userId": u, "postgres": legacy[u][m], "clickhouse": got[m], "reason": reason})
            hit = cached.get(u)
            if hit is not None and _counts(hit) != _counts(fresh[u]):
                report.cache_mismatches += 1
                if len(report.cache_examples) < EXAMPLES:
                    report.cache_examples.append(u)
    _compare_reactions(rt, eng, report, rnd, reactions_sample)
    return report


def _counts(m: UserMetrics) -> dict[str, Any]:
    data = m.to_json()
    data.pop("rank", None)
    return data


def _users_with_events(rt: Runtime, users: list[int], inserted_after: datetime | None = None) -> set[int]:
    sql = (
        "SELECT DISTINCT arrayJoin([userId, ownerId]) AS u FROM entityMetricEvents "
        "WHERE (userId IN {users:Array(Int64)} OR ownerId IN {users:Array(Int64)}) AND metricType != 'Engagement'"
    )
    params: dict[str, Any] = {"users": users}
    if inserted_after is not None:
        sql += " AND insertedAt > {after:DateTime64(3, 'UTC')}"
        params["after"] = inserted_after
    return {int(u) for (u,) in rt.clickhouse.rows(sql, params)} & set(users)


def _compare_reactions(rt: Runtime, eng: Engine, report: CompareReport, rnd: random.Random, sample: int) -> None:
    with eng.connect() as conn:
        reactors = [int(u) for (u,) in conn.execute(select(ImageReaction.userId).distinct())]
    chosen = sorted(rnd.sample(reactors, min(sample, len(reactors))))
    source = clickhouse_reaction_source(rt)
    for u in chosen:
        with eng.connect() as conn:
            images = sorted(
                {int(i) for (i,) in conn.execute(select(ImageReaction.imageId).where(ImageReaction.userId == u))}
            )
        for j in range(0, len(images), 1000):
            page = images[j : j + 1000]
            legacy = legacy_reactions(eng, u, page)
            states = source(u, page)
            for image in page:
                got = sum(b.bit for b in states[image] if b.on)
                report.reaction_pairs += 1
                if got != legacy[image]:
                    report.reaction_mismatches += 1
                    if len(report.reaction_examples) < EXAMPLES:
                        report.reaction_examples.append(
                            {"userId": u, "imageId": image, "postgres": legacy[image], "clickhouse": got}
                        )
    report.reaction_users = len(chosen)
