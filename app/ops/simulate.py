"""Realistic web-app traffic: Zipf popularity, follows and unfollows, uploads and removals, reaction toggles,
downloads and generations. Used by ``python -m app simulate`` and by the ingest benchmark.

The generator keeps the state a web app would have (who follows whom, which images exist, current reactions), so
the stream makes sense: unfollows follow follows, reactions land on uploaded images, toggles flip real state.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from app.client import EventProducer
from app.core import constants as c
from app.core.events import new_event_id

MIX: tuple[tuple[str, float], ...] = (
    ("follow", 0.22),
    ("upload", 0.10),
    ("reaction", 0.43),
    ("download", 0.20),
    ("generation", 0.05),
)


class Zipf:
    """Draw ranks 1..n with probability proportional to 1 / rank**s."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        self.rng = rng
        self.cumulative = list(itertools.accumulate(1.0 / (k**s) for k in range(1, n + 1)))

    def draw(self) -> int:
        return bisect.bisect_left(self.cumulative, self.rng.random() * self.cumulative[-1]) + 1


@dataclass
class Message:
    task: str
    kwargs: dict[str, Any]


@dataclass
class TrafficGenerator:
    users: int
    seed: int = 0
    zipf_s: float = 1.1
    rng: random.Random = field(init=False)
    popularity: Zipf = field(init=False)
    following: set[tuple[int, int]] = field(default_factory=set)
    images: list[tuple[int, int]] = field(default_factory=list)  # (image id, owner)
    models: list[tuple[int, int]] = field(default_factory=list)
    reactions: dict[tuple[int, int], int] = field(default_factory=dict)
    next_entity: int = 1

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - simulation, not security
        self.popularity = Zipf(self.users, self.zipf_s, self.rng)
        self._kinds = [k for k, _ in MIX]
        self._weights = [w for _, w in MIX]

    def _any_user(self) -> int:
        return self.rng.randint(1, self.users)

    def _popular_user(self) -> int:
        return self.popularity.draw()

    def _popular(self, items: list[tuple[int, int]]) -> tuple[int, int]:
        # Newer uploads are more popular: rank from the end of the list.
        rank = min(len(items), self.popularity.draw())
        return items[-rank]

    def next(self) -> Message:
        kind = self.rng.choices(self._kinds, self._weights)[0]
        if kind in ("reaction", "download", "generation") and not self.images:
            kind = "upload"
        if kind == "follow":
            return self._follow()
        if kind == "upload":
            return self._upload()
        if kind == "reaction":
            return self._reaction()
        return self._usage("Download" if kind == "download" else "Generation")

    def _follow(self) -> Message:
        follower, target = self._any_user(), self._popular_user()
        if follower == target:
            target = target % self.users + 1
        pair = (follower, target)
        unfollow = pair in self.following and self.rng.random() < 0.5
        if unfollow:
            self.following.discard(pair)
        else:
            self.following.add(pair)
        return Message(c.RECORD_FOLLOW, {"follower_id": follower, "user_id": target, "is_follow": not unfollow})

    def _upload(self) -> Message:
        owner = self._popular_user()
        if self.images and self.rng.random() < 0.03:
            image, image_owner = self.images.pop(self.rng.randrange(len(self.images)))
            return Message(
                c.RECORD_UPLOAD,
                {"user_id": image_owner, "content_type": "Image", "entity_id": image, "is_removed": True},
            )
        content = self.rng.choices(("Image", "Post", "Model"), (0.8, 0.15, 0.05))[0]
        entity = self.next_entity
        self.next_entity += 1
        if content == "Image":
            self.images.append((entity, owner))
        elif content == "Model":
            self.models.append((entity, owner))
        return Message(c.RECORD_UPLOAD, {"user_id": owner, "content_type": content, "entity_id": entity})

    def _reaction(self) -> Message:
        image, owner = self._popular(self.images)
        user = self._any_user()
        flags = self.reactions.get((user, image), 0) ^ (1 << self.rng.randrange(4))
        self.reactions[(user, image)] = flags
        kwargs = {"user_id": user, "image_id": image, "reactions": flags}
        if self.rng.random() < 0.7:  # most producers know the owner; the rest rely on resolution
            kwargs["owner_id"] = owner
        return Message(c.SET_REACTION, kwargs)

    def _usage(self, metric: str) -> Message:
        pool = self.models if self.models and self.rng.random() < 0.5 else self.images
        entity, owner = self._popular(pool)
        return Message(
            c.RECORD_ENTITY_METRIC,
            {
                "entity_type": "Model" if pool is self.models else "Image",
                "entity_id": entity,
                "metric_type": metric,
                "metric_value": 1,
                "user_id": self._any_user(),
                "owner_id": owner,
            },
        )

    def stream(
        self, count: int, *, duplicates: float = 0.0, out_of_order: float = 0.0, now: datetime | None = None
    ) -> Iterator[Message]:
        """``count`` stamped messages; a fraction re-sent (same event id) or stamped up to a minute in the past."""
        recent: list[Message] = []
        for _ in range(count):
            if recent and self.rng.random() < duplicates:
                yield self.rng.choice(recent)
                continue
            msg = self.next()
            when = now or datetime.now(UTC)
            if self.rng.random() < out_of_order:
                when -= timedelta(seconds=self.rng.uniform(1, 60))
            msg.kwargs.update(event_id=str(new_event_id()), occurred_at=when.isoformat())
            recent.append(msg)
            if len(recent) > 1000:
                recent.pop(0)
            yield msg


def send(
    producer: EventProducer,
    stream: Iterable[Message],
    *,
    rate: float = 0.0,
    batch: int = 1,
    on_sent: Callable[[], None] | None = None,
) -> int:
    """Send ``stream`` through ``producer`` at ``rate`` messages per second (0: as fast as possible), one task per
    event or ``batch`` events per ``record_events``; returns how many events."""
    started = time.monotonic()
    pending: list[dict[str, Any]] = []
    sent = 0
    for sent, msg in enumerate(stream, start=1):
        if batch > 1:
            pending.append({"type": msg.task, **msg.kwargs})
            if len(pending) >= batch:
                producer.send(c.RECORD_EVENTS, events=pending)
                pending = []
        else:
            producer.send(msg.task, **msg.kwargs)
        if on_sent is not None:
            on_sent()
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    if pending:
        producer.send(c.RECORD_EVENTS, events=pending)
    return sent
