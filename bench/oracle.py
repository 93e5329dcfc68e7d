"""An independent, obviously correct oracle: apply events once each, in (createdAt, eventId) order.

Written from the definitions alone (docs/architecture.md), sharing no code with the service's counting: the
property tests and the chaos soak compare every number the service serves with it. ``events_of`` turns producer
messages into the log's events from the task contracts, also without the service's parser."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from app.core.events import derive_event_id

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

    def metrics(self, user: int) -> dict[str, int | Decimal]:
        """``user``'s metrics: the counts that are not zero, and ``engagementScore``."""
        return self.all_metrics().get(user, {"engagementScore": Decimal(0)})

    def all_metrics(self) -> dict[int, dict[str, int | Decimal]]:  # noqa: C901 - a flat list of the definitions
        """Every user's metrics in one pass (the users any event names)."""
        counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        scores: dict[int, Decimal] = defaultdict(Decimal)
        since = self.now.timestamp() - self.window_days * 86400
        for (etype, _eid, mtype, actor), e in self.state.items():
            if e.value <= 0:
                continue
            if mtype == "Follow":
                counts[actor]["followingCount"] += 1
            if mtype == "Upload":
                counts[actor][{"Model": "modelCount", "Post": "postCount", "Image": "imageCount"}[etype]] += 1
                counts[actor]["uploadCount"] += 1
            owner = e.owner_id
            if owner != actor and actor not in self.excluded:
                if mtype == "Follow":
                    counts[owner]["followerCount"] += 1
                if mtype in REACTIONS:
                    counts[owner]["reactionCount"] += 1
                if mtype in ("Follow", *REACTIONS) and e.at.timestamp() >= since:
                    scores[owner] += WEIGHTS.get(mtype, OTHER_WEIGHT)
        for e in self.additive.values():
            owner = e.owner_id
            if e.user_id in self.excluded:
                continue
            if e.metric_type == "Download":
                counts[owner]["downloadCount"] += e.value
            if e.metric_type == "Generation":
                counts[owner]["generationCount"] += e.value
            if e.user_id != owner and e.at.timestamp() >= since:
                scores[owner] += WEIGHTS.get(e.metric_type, OTHER_WEIGHT) * e.value
        users = set(counts) | set(scores)
        return {u: {**counts.get(u, {}), "engagementScore": scores.get(u, Decimal(0))} for u in users}

    def reactions(self, user: int, image: int) -> int:
        flags = 0
        for mtype, bit in REACTIONS.items():
            e = self.state.get(("Image", image, mtype, user))
            if e is not None and e.value > 0:
                flags |= bit
        return flags


def events_of(messages: Iterable[Mapping[str, Any]]) -> list[E]:
    """The log events of producer messages: ``{"type": task name, **kwargs}``, each stamped with ``event_id`` and
    ``occurred_at``. A reaction message is one event per reaction kind (on or off), with the ids the contract
    derives from the message's id; an owner the message leaves out is 0 (the oracle resolves it from uploads)."""
    out = []
    for m in messages:
        at = datetime.fromisoformat(m["occurred_at"])
        if m["type"] == "record_follow":
            on = 1 if m.get("is_follow", True) else -1
            out.append(E(m["event_id"], "User", m["user_id"], m["follower_id"], m["user_id"], "Follow", on, at))
        elif m["type"] == "record_upload":
            on = -1 if m.get("is_removed", False) else 1
            etype, entity, owner = m["content_type"], m["entity_id"], m["user_id"]
            out.append(E(m["event_id"], etype, entity, owner, owner, "Upload", on, at))
        elif m["type"] == "set_reaction":
            owner = m.get("owner_id") or 0
            for metric, bit in REACTIONS.items():
                event_id = str(derive_event_id(m["event_id"], metric))
                on = 1 if m["reactions"] & bit else -1
                out.append(E(event_id, "Image", m["image_id"], m["user_id"], owner, metric, on, at))
        else:
            owner = m.get("owner_id") or 0
            value = m.get("metric_value", 1)
            etype, entity = m["entity_type"], m["entity_id"]
            out.append(E(m["event_id"], etype, entity, m["user_id"], owner, m["metric_type"], value, at))
    return out
