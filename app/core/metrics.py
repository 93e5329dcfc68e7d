"""The metric model: what a user's numbers are, the engagement weights and score scale, and the SQL fragments that
every query computing them shares (``app.derived.metrics_from_log``, ``app.jobs.engagement``, ``app.read.history``).

Definitions (docs/architecture.md, "Metrics"): counts of state keys that are on (followers, following, uploads by
type, reactions received), sums of additive events (downloads, generations) and the engagement score: the weighted
sum, over the window, of what others did to a user's entities, excluded users and self-actions left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal

from app.core.events import ADDITIVE_TYPES, ENGAGEMENT_SCALE, REACTION_TYPES

# Scores are summed as integers in units of 1/10,000 so that they are exact, whatever the weights: the same scale as
# the ``Engagement`` values stored in the event log.
SCORE_SCALE = ENGAGEMENT_SCALE

REACTION_METRICS = [m.value for m in REACTION_TYPES.values()]
ADDITIVE = sorted(m.value for m in ADDITIVE_TYPES)

# -- SQL fragments (constant text; every value they use is a bound parameter) -----------------------------------
# The managed list of excluded users, inlined in every query as a set (it is small).
EXCLUDED_USERS_SQL = "(SELECT userId FROM excludedUsers FINAL WHERE excluded = 1)"
# An event's weight in units of 1 / SCORE_SCALE (parameters from ``EngagementWeights.params``).
WEIGHT_SQL = "transform(metricType, {wtypes:Array(String)}, {wvalues:Array(Int64)}, {wdefault:Int64})"
# The state types that count for the owner of the entity (followers, reactions received).
OWNER_STATE_TYPES_SQL = "('Follow', 'ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry')"


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
        for name, field_name in _HASH_FIELDS:
            raw = data.get(name)
            if raw is None or raw == "":
                continue
            kwargs[field_name] = Decimal(raw) if field_name == "engagement_score" else int(raw)
        return cls(**kwargs)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, int | float | None]:
        out: dict[str, int | float | None] = {}
        for name, value in asdict(self).items():
            out[_camel(name)] = float(value) if isinstance(value, Decimal) else value
        return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_HASH_FIELDS = [(_camel(f.name), f.name) for f in fields(UserMetrics)]  # (hash field, attribute), computed once


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
