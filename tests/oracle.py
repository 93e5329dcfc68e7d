"""An independent, obviously correct oracle: apply events once each, in (createdAt, eventId) order."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
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
        ordered = sorted(unique.values(), key=lambda x: (x.at, x.event_id))
        # An entity belongs to its uploader (latest Upload), else to the owner any event on it named.
        uploaders: dict[tuple[str, int], int] = {}
        named: dict[tuple[str, int], int] = defaultdict(int)
        for e in ordered:
            if e.metric_type == "Upload":
                uploaders[(e.entity_type, e.entity_id)] = e.user_id
            else:
                named[(e.entity_type, e.entity_id)] = max(named[(e.entity_type, e.entity_id)], e.owner_id)
        for e in ordered:
            if e.metric_type != "Upload" and e.entity_type in ("Model", "Post", "Image"):
                entity = (e.entity_type, e.entity_id)
                e = replace(e, owner_id=uploaders.get(entity, named[entity]))
            if e.metric_type in STATE:
                self.state[(e.entity_type, e.entity_id, e.metric_type, e.user_id)] = e
            elif e.metric_type != "Engagement":
                self.additive[e.event_id] = e

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
