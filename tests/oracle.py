"""An independent, obviously correct oracle: apply events once each, in (createdAt, eventId) order."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

STATE = {"Follow", "Upload", "ReactionLike", "ReactionHeart", "ReactionLaugh", "ReactionCry"}
REACTIONS = {"ReactionLike": 1, "ReactionHeart": 2, "ReactionLaugh": 4, "ReactionCry": 8}
WEIGHTS = {
    "Download": Decimal(1),
    "Generation": Decimal(2),
    "ReactionHeart": Decimal("0.5"),
    "Comment": Decimal("1.5"),
}
OTHER_WEIGHT = Decimal("0.1")


@dataclass(frozen=True)
class E:
    event_id: str
    entity_type: str
    entity_id: int
    user_id: int
    owner_id: int
    metric_type: str
    value: int
    at: datetime


@dataclass
class Oracle:
    now: datetime
    window_days: int = 30
    excluded: set[int] = field(default_factory=set)
    state: dict[tuple[str, int, str, int], E] = field(default_factory=dict)
    additive: dict[str, E] = field(default_factory=dict)

    def apply_all(self, events: list[E]) -> None:
        unique = {e.event_id: e for e in events}
        owners: dict[tuple[str, int, str, int], int] = defaultdict(int)
        for e in sorted(unique.values(), key=lambda x: (x.at, x.event_id)):
            if e.metric_type in STATE:
                key = (e.entity_type, e.entity_id, e.metric_type, e.user_id)
                owners[key] = max(owners[key], e.owner_id)
                self.state[key] = e
            else:
                self.additive[e.event_id] = e
        # A state key belongs to the owner any of its events named (some may predate that knowledge).
        for key, e in self.state.items():
            self.state[key] = E(
                e.event_id, e.entity_type, e.entity_id, e.user_id, owners[key], e.metric_type, e.value, e.at
            )

    def metrics(self, user: int) -> dict[str, object]:  # noqa: C901 - a flat list of the definitions
        out: dict[str, object] = defaultdict(int)
        score = Decimal(0)
        since = self.now.timestamp() - self.window_days * 86400
        for (etype, _eid, mtype, actor), e in self.state.items():
            if e.value <= 0:
                continue
            if actor == user and mtype == "Follow":
                out["followingCount"] += 1
            if actor == user and mtype == "Upload":
                out[{"Model": "modelCount", "Post": "postCount", "Image": "imageCount"}[etype]] += 1
                out["uploadCount"] += 1
            if e.owner_id == user and actor != user and actor not in self.excluded:
                if mtype == "Follow":
                    out["followerCount"] += 1
                if mtype in REACTIONS:
                    out["reactionCount"] += 1
                if mtype in ("Follow", *REACTIONS) and e.at.timestamp() >= since:
                    score += WEIGHTS.get(mtype, OTHER_WEIGHT)
        for e in self.additive.values():
            if e.owner_id != user or e.user_id in self.excluded:
                continue
            if e.metric_type == "Download":
                out["downloadCount"] += e.value
            if e.metric_type == "Generation":
                out["generationCount"] += e.value
            if e.user_id != user and e.at.timestamp() >= since:
                score += WEIGHTS.get(e.metric_type, OTHER_WEIGHT) * e.value
        out["engagementScore"] = score
        return dict(out)

    def reactions(self, user: int, image: int) -> int:
        flags = 0
        for mtype, bit in REACTIONS.items():
            e = self.state.get(("Image", image, mtype, user))
            if e is not None and e.value > 0:
                flags |= bit
        return flags
