"""User metrics, computed from the event log exactly as DESIGN.md section 3 defines them.

Every query is idempotent in ``eventId``: state keys take their latest value with ``argMax`` over
``(createdAt, eventId)`` (a duplicate row cannot change a maximum), additive events are grouped by ``eventId``
before summing. So duplicated, replayed or reordered deliveries give the same numbers as one clean delivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.clickhouse import ClickHouse
from app.events import ADDITIVE_TYPES, REACTION_TYPES

# Scores are summed as integers in units of 1/10,000 so that they are exact, whatever the weights.
SCORE_SCALE = 10_000

_REACTIONS = [m.value for m in REACTION_TYPES.values()]
_ADDITIVE = sorted(m.value for m in ADDITIVE_TYPES)
_TOTALS = ["Download", "Generation"]  # the additive types with a field of their own

# The managed list of excluded users, inlined in every query as a set (it is small).
EXCLUDED_USERS = "(SELECT userId FROM excludedUsers FINAL WHERE excluded = 1)"
_WEIGHT = "transform(metricType, {wtypes:Array(String)}, {wvalues:Array(Int64)}, {wdefault:Int64})"

# The f-strings below splice constant SQL fragments only; every value is a bound parameter.

# -- Current values, from the aggregate tables (sql/0003_read_aggregates.sql) ----------------------------------
ACTOR_SQL = """
SELECT userId,
       countIf(metricType = 'Follow' AND v > 0),
       countIf(metricType = 'Upload' AND entityType = 'Model' AND v > 0),
       countIf(metricType = 'Upload' AND entityType = 'Post' AND v > 0),
       countIf(metricType = 'Upload' AND entityType = 'Image' AND v > 0)
FROM (
    SELECT userId, metricType, entityType, entityId, argMaxMerge(latest) AS v
    FROM stateByActor
    WHERE userId IN {users:Array(Int64)} AND metricType IN ('Follow', 'Upload')
    GROUP BY userId, metricType, entityType, entityId
)
GROUP BY userId
"""

OWNER_STATE_SQL = f"""
SELECT ownerId,
       countIf(metricType = 'Follow' AND v > 0),
       countIf(metricType IN {{reactions:Array(String)}} AND v > 0),
       sumIf({_WEIGHT}, v > 0 AND lastAt >= {{since:DateTime64(3, 'UTC')}})
FROM (
    SELECT ownerId, metricType, entityType, entityId, userId, argMaxMerge(latest) AS v, max(lastAt) AS lastAt
    FROM stateByOwner
    WHERE ownerId IN {{users:Array(Int64)}} AND metricType IN ('Follow', 'ReactionLike', 'ReactionHeart',
                                                               'ReactionLaugh', 'ReactionCry')
    GROUP BY ownerId, metricType, entityType, entityId, userId
)
WHERE userId != ownerId AND userId NOT IN {EXCLUDED_USERS}
GROUP BY ownerId
"""  # noqa: S608

# Per (owner, metric): the sum of the buckets without redeliveries, and the days whose buckets had some.
ADDITIVE_BUCKETS_SQL = """
SELECT ownerId, metricType, sumIf(t, r = u), groupArrayIf(day, r != u)
FROM (
    SELECT ownerId, metricType, day, sum(total) AS t, sum(rowCount) AS r, uniqExactMerge(events) AS u
    FROM additiveDaily
    WHERE ownerId IN {users:Array(Int64)} AND metricType IN {totals:Array(String)}
    GROUP BY ownerId, metricType, day
)
GROUP BY ownerId, metricType
"""

# From the raw log, each event once: the window's engagement, the excluded users' share of the totals (to take
# off), and the exact totals of the days whose buckets saw redeliveries.
ADDITIVE_RAW_SQL = f"""
SELECT owner,
       sumIf(val * w, at >= {{since:DateTime64(3, 'UTC')}} AND actor != owner AND NOT excl),
       sumIf(val, mt = 'Download' AND excl), sumIf(val, mt = 'Generation' AND excl),
       sumIf(val, mt = 'Download' AND redelivered), sumIf(val, mt = 'Generation' AND redelivered)
FROM (
    SELECT eventId, any(ownerId) AS owner, any(metricType) AS mt, any(metricValue) AS val, any(userId) AS actor,
           any(createdAt) AS at, any({_WEIGHT}) AS w,
           actor IN {EXCLUDED_USERS} AS excl,
           (owner, mt, toDate(at)) IN {{redelivered:Array(Tuple(Int64, String, Date))}} AS redelivered
    FROM entityMetricEvents
    WHERE ownerId IN {{users:Array(Int64)}} AND metricType IN {{additive:Array(String)}}
      AND (createdAt >= {{since:DateTime64(3, 'UTC')}} OR userId IN {EXCLUDED_USERS}
           OR (ownerId, metricType, toDate(createdAt)) IN {{redelivered:Array(Tuple(Int64, String, Date))}})
    GROUP BY eventId
)
GROUP BY owner
"""  # noqa: S608

# -- Values as of an instant, from the raw log (event time; slower: every key is derived again) ----------------
_LATEST_STATE = """
    SELECT entityType, entityId, metricType, userId,
           argMax(metricValue, (createdAt, toString(eventId))) AS v,
           max(createdAt) AS lastAt,
           max(ownerId) AS owner
    FROM entityMetricEvents
    WHERE {where} AND createdAt <= {{asof:DateTime64(3, 'UTC')}}
    GROUP BY entityType, entityId, metricType, userId
"""

ACTOR_ASOF_SQL = f"""
SELECT userId,
       countIf(metricType = 'Follow' AND v > 0),
       countIf(metricType = 'Upload' AND entityType = 'Model' AND v > 0),
       countIf(metricType = 'Upload' AND entityType = 'Post' AND v > 0),
       countIf(metricType = 'Upload' AND entityType = 'Image' AND v > 0)
FROM ({_LATEST_STATE.format(where="userId IN {users:Array(Int64)} AND metricType IN ('Follow', 'Upload')")})
GROUP BY userId
"""  # noqa: S608

# Owner side: a key's state is its latest event among *all* its rows (some rows may predate the knowledge of
# the owner and carry ownerId 0); the key belongs to the owner any of its rows names.
_OWNER_TYPES = "('Follow', 'ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry')"
OWNER_STATE_ASOF_SQL = f"""
SELECT owner,
       countIf(metricType = 'Follow' AND v > 0),
       countIf(metricType IN {{reactions:Array(String)}} AND v > 0),
       sumIf({_WEIGHT}, v > 0 AND lastAt >= {{since:DateTime64(3, 'UTC')}})
FROM ({
    _LATEST_STATE.format(
        where=f"metricType IN {_OWNER_TYPES} AND (entityType, entityId) IN ("
        f"SELECT entityType, entityId FROM entityMetricEvents "
        f"WHERE ownerId IN {{users:Array(Int64)}} AND metricType IN {_OWNER_TYPES})"
    )
})
WHERE owner IN {{users:Array(Int64)}} AND userId != owner AND userId NOT IN {EXCLUDED_USERS}
GROUP BY owner
"""  # noqa: S608

OWNER_ADDITIVE_ASOF_SQL = f"""
SELECT owner,
       sumIf(val, mt = 'Download'),
       sumIf(val, mt = 'Generation'),
       sumIf(val * w, actor != owner AND at >= {{since:DateTime64(3, 'UTC')}})
FROM (
    SELECT eventId, any(ownerId) AS owner, any(userId) AS actor, any(metricType) AS mt,
           any(metricValue) AS val, any(createdAt) AS at, any({_WEIGHT}) AS w
    FROM entityMetricEvents
    WHERE ownerId IN {{users:Array(Int64)}} AND metricType IN {{additive:Array(String)}}
      AND userId NOT IN {EXCLUDED_USERS} AND createdAt <= {{asof:DateTime64(3, 'UTC')}}
    GROUP BY eventId
)
GROUP BY owner
"""  # noqa: S608


@dataclass
class UserMetrics:
    """The fields of ``user:metrics:{userId}``; ``rank`` is None for users without a positive score."""

    follower_count: int = 0
    following_count: int = 0
    model_count: int = 0
    post_count: int = 0
    image_count: int = 0
    upload_count: int = 0
    reaction_count: int = 0
    download_count: int = 0
    generation_count: int = 0
    engagement_score: Decimal = field(default_factory=lambda: Decimal(0))
    rank: int | None = None

    def to_hash(self) -> dict[str, str]:
        """Redis hash fields (camelCase, decimal strings). ``rank`` is absent when the user has no rank."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[_camel(f.name)] = format_score(value) if isinstance(value, Decimal) else str(value)
        return out

    @classmethod
    def from_hash(cls, data: Mapping[str, str]) -> UserMetrics:
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            raw = data.get(_camel(f.name))
            if raw is None or raw == "":
                continue
            kwargs[f.name] = Decimal(raw) if f.name == "engagement_score" else int(raw)
        return cls(**kwargs)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, int | float | None]:
        out: dict[str, int | float | None] = {}
        for name, value in asdict(self).items():
            out[_camel(name)] = float(value) if isinstance(value, Decimal) else value
        return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def format_score(score: Decimal) -> str:
    text = format(score.quantize(Decimal("0.0001")).normalize(), "f")
    return "0" if text in ("-0", "0.0000") else text


@dataclass(frozen=True)
class EngagementWeights:
    """Weights per metric type in units of ``1 / SCORE_SCALE``; ``default`` applies to any other type."""

    by_type: Mapping[str, int]
    default: int

    @classmethod
    def from_settings(cls, weights: Mapping[str, Decimal]) -> EngagementWeights:
        scaled = {k: int(Decimal(v) * SCORE_SCALE) for k, v in weights.items()}
        default = scaled.pop("*", int(Decimal("0.1") * SCORE_SCALE))
        return cls(scaled, default)

    def params(self) -> dict[str, object]:
        types = sorted(self.by_type)
        return {"wtypes": types, "wvalues": [self.by_type[t] for t in types], "wdefault": self.default}


def compute_user_metrics(
    ch: ClickHouse,
    user_ids: Iterable[int],
    *,
    weights: EngagementWeights,
    window: timedelta,
    as_of: datetime | None = None,
) -> dict[int, UserMetrics]:
    """Every metric of DESIGN.md section 3 for ``user_ids`` (rank excluded), now or as of ``as_of``.

    Current values come from the aggregate tables; values as of an instant are derived from the raw log.
    """
    users = sorted(set(user_ids))
    if not users:
        return {}
    if as_of is not None:
        return _compute_as_of(ch, users, weights=weights, window=window, as_of=as_of.astimezone(UTC))
    now = datetime.now(UTC)
    params: dict[str, object] = {
        "users": users,
        "since": now - window,
        "reactions": _REACTIONS,
        "additive": _ADDITIVE,
        "totals": _TOTALS,
        **weights.params(),
    }
    out = {uid: UserMetrics() for uid in users}
    _apply_actor_side(out, ch.rows(ACTOR_SQL, params))
    scores = _apply_owner_state(out, ch.rows(OWNER_STATE_SQL, params))
    redelivered: list[tuple[int, str, date]] = []
    for owner, metric, total, days in ch.rows(ADDITIVE_BUCKETS_SQL, params):
        m = out[int(owner)]
        if metric == "Download":
            m.download_count += int(total)
        else:
            m.generation_count += int(total)
        redelivered.extend((int(owner), str(metric), d) for d in days)
    for owner, score, excl_dl, excl_gen, exact_dl, exact_gen in ch.rows(
        ADDITIVE_RAW_SQL, {**params, "redelivered": redelivered}
    ):
        m = out[int(owner)]
        m.download_count += int(exact_dl) - int(excl_dl)
        m.generation_count += int(exact_gen) - int(excl_gen)
        scores[int(owner)] = scores.get(int(owner), 0) + int(score)
    _apply_scores(out, scores)
    return out


def _compute_as_of(
    ch: ClickHouse, users: list[int], *, weights: EngagementWeights, window: timedelta, as_of: datetime
) -> dict[int, UserMetrics]:
    params: dict[str, object] = {
        "users": users,
        "asof": as_of,
        "since": as_of - window,
        "reactions": _REACTIONS,
        "additive": _ADDITIVE,
        **weights.params(),
    }
    out = {uid: UserMetrics() for uid in users}
    _apply_actor_side(out, ch.rows(ACTOR_ASOF_SQL, params))
    scores = _apply_owner_state(out, ch.rows(OWNER_STATE_ASOF_SQL, params))
    for owner, downloads, generations, score in ch.rows(OWNER_ADDITIVE_ASOF_SQL, params):
        m = out[int(owner)]
        m.download_count, m.generation_count = int(downloads), int(generations)
        scores[int(owner)] = scores.get(int(owner), 0) + int(score)
    _apply_scores(out, scores)
    return out


def _apply_actor_side(out: dict[int, UserMetrics], rows: list[tuple[Any, ...]]) -> None:
    for uid, following, models, posts, images in rows:
        m = out[int(uid)]
        m.following_count = int(following)
        m.model_count, m.post_count, m.image_count = int(models), int(posts), int(images)
        m.upload_count = m.model_count + m.post_count + m.image_count


def _apply_owner_state(out: dict[int, UserMetrics], rows: list[tuple[Any, ...]]) -> dict[int, int]:
    scores: dict[int, int] = {}
    for owner, followers, reactions, score in rows:
        m = out[int(owner)]
        m.follower_count, m.reaction_count = int(followers), int(reactions)
        scores[int(owner)] = int(score)
    return scores


def _apply_scores(out: dict[int, UserMetrics], scores: Mapping[int, int]) -> None:
    for uid, score in scores.items():
        out[uid].engagement_score = Decimal(score) / SCORE_SCALE
