"""Creator insights from their definitions alone, over small inputs: replay the events once each, in
``(createdAt, eventId)`` order, and answer with the JSON shapes of ``UserInsightsService``.

Nothing here is derived from the project's queries. Clarity over speed: every state is found by scanning the
key's events again.

- Events are deduplicated by ``eventId``; the order is ``(createdAt, eventId as lowercase text)``; only events with
  ``createdAt <= as_of`` exist.
- The state of a key ``(entityType, entityId, metricType, actor)`` at an instant is the value of its latest event at
  or before it, on if > 0; a key without such an event is off.
- Excluded users' actions count for nobody; a creator's own actions never count in growth, retention, audience and
  activity. A user's entities are the events whose ``ownerId`` is that user.
- Days, weeks (from Monday) and hours are those of the zone; the end of a day is the last instant before the next
  day starts there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from bench.oracle import REACTIONS, E, Oracle

REACTION_TYPES = frozenset(REACTIONS)
ACTIVITY_ADDITIVE = frozenset({"Download", "Generation", "Comment"})
TIERS = (1, 10, 100, 1_000, 10_000, 100_000)
PEER_METRICS = ("followerCount", "engagementScore", "reactionCount", "downloadCount", "followerGrowth30d")
# The last instant before a boundary (events carry milliseconds; any instant after the last millisecond will do).
JUST_BEFORE = timedelta(microseconds=1)

Key = tuple[str, int, str, int]


def order(e: E) -> tuple[datetime, str]:
    return (e.at, e.event_id.lower())


def the_log(events: Iterable[E], as_of: datetime) -> list[E]:
    """The events that exist at ``as_of``: one per event id, in event order."""
    unique = {e.event_id.lower(): e for e in events}
    return sorted((e for e in unique.values() if e.at <= as_of), key=order)


def key_of(e: E) -> Key:
    return (e.entity_type, e.entity_id, e.metric_type, e.user_id)


def on_at(key_events: list[E], t: datetime) -> bool:
    """The state at ``t`` of a key whose events (in event order) are ``key_events``."""
    latest = None
    for e in key_events:
        if e.at <= t:
            latest = e
    return latest is not None and latest.value > 0


def day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``zone``, in UTC."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def day_end(day: date, zone: ZoneInfo) -> datetime:
    """The last instant of ``day`` in ``zone`` (the last instant before the next day starts)."""
    return day_start(day + timedelta(days=1), zone) - JUST_BEFORE


def monday_of(t: datetime, zone: ZoneInfo) -> date:
    local = t.astimezone(zone).date()
    return local - timedelta(days=local.weekday())


def follower_band(followers: int) -> str:
    """``0``, ``1-9``, ``10-99``, ``100-999``, ..."""
    if followers <= 0:
        return "0"
    low = 10 ** (len(str(followers)) - 1)
    return f"{low}-{low * 10 - 1}"


@dataclass
class Insights:
    """The read-time insights of every user, for one log, one excluded set and one ``as_of``."""

    events: list[E]
    excluded: set[int]
    as_of: datetime
    log: list[E] = field(init=False)

    def __post_init__(self) -> None:
        self.log = the_log(self.events, self.as_of)

    def counts_for(self, actor: int, user: int) -> bool:
        """Whether ``actor``'s actions count for ``user``: not the user's own, and not an excluded user's."""
        return actor != user and actor not in self.excluded

    def follows_of(self, user: int) -> dict[int, list[E]]:
        """Each counting follower's follow key of ``user``: the key's events in event order."""
        keys: dict[int, list[E]] = defaultdict(list)
        for e in self.log:
            is_follow_of_user = e.entity_type == "User" and e.entity_id == user and e.metric_type == "Follow"
            if is_follow_of_user and self.counts_for(e.user_id, user):
                keys[e.user_id].append(e)
        return keys

    def followers_at(self, user: int, t: datetime) -> set[int]:
        at = min(t, self.as_of)
        return {f for f, key_events in self.follows_of(user).items() if on_at(key_events, at)}

    def is_follower_at(self, user: int, actor: int, t: datetime) -> bool:
        return on_at(self.follows_of(user).get(actor, []), min(t, self.as_of))

    def reaction_turn_ons(self, user: int) -> list[E]:
        """The events that turned a counting reaction key on ``user``'s entities on (off before, on after)."""
        keys: dict[Key, list[E]] = defaultdict(list)
        for e in self.log:
            if e.metric_type in REACTION_TYPES and e.owner_id == user and self.counts_for(e.user_id, user):
                keys[key_of(e)].append(e)
        turned_on = []
        for key_events in keys.values():
            was_on = False
            for e in key_events:
                if e.value > 0 and not was_on:
                    turned_on.append(e)
                was_on = e.value > 0
        return sorted(turned_on, key=order)

    def received(self, user: int, metric_types: frozenset[str]) -> list[E]:
        """Additive events of ``metric_types`` on ``user``'s entities by counting actors (one per event id)."""
        return [
            e
            for e in self.log
            if e.metric_type in metric_types and e.owner_id == user and self.counts_for(e.user_id, user)
        ]

    # --- the insights -------------------------------------------------------------------------------------------

    def growth(self, user: int, start: date, end: date, tz: str = "UTC") -> dict[str, Any]:
        zone = ZoneInfo(tz)
        days = []
        day = start
        while day <= end:
            before = self.followers_at(user, day_end(day - timedelta(days=1), zone))
            after = self.followers_at(user, day_end(day, zone))
            days.append(
                {
                    "day": day.isoformat(),
                    "gained": len(after - before),
                    "lost": len(before - after),
                    "followers": len(after),
                }
            )
            day += timedelta(days=1)
        return {"userId": user, "days": days}

    def retention(self, user: int, weeks: int = 12, tz: str = "UTC") -> dict[str, Any]:
        zone = ZoneInfo(tz)
        follows = self.follows_of(user)
        cohort_of: dict[int, date] = {}
        for follower, key_events in follows.items():
            first_on = next((e for e in key_events if e.value > 0), None)
            if first_on is not None:
                cohort_of[follower] = monday_of(first_on.at, zone)
        last_week = monday_of(self.as_of, zone)
        cohorts = []
        for back in range(weeks - 1, -1, -1):
            week = last_week - timedelta(weeks=back)
            members = [f for f, cohort in cohort_of.items() if cohort == week]
            retained = []
            k = 0
            while day_start(week + timedelta(weeks=k), zone) <= self.as_of:
                week_end = day_end(week + timedelta(weeks=k, days=6), zone)
                at = min(week_end, self.as_of)
                retained.append(sum(1 for f in members if on_at(follows[f], at)))
                k += 1
            cohorts.append({"week": week.isoformat(), "size": len(members), "retained": retained})
        return {"userId": user, "asOf": self.as_of.isoformat(), "cohorts": cohorts}

    def audience(self, user: int, start: date, end: date, tz: str = "UTC") -> dict[str, Any]:
        zone = ZoneInfo(tz)
        low, high = day_start(start, zone), day_end(end, zone)
        reactions = {"followers": 0, "nonFollowers": 0}
        for e in self.reaction_turn_ons(user):
            if low <= e.at <= high:
                reactions[self._side(user, e)] += 1
        downloads = {"followers": 0, "nonFollowers": 0}
        for e in self.received(user, frozenset({"Download"})):
            if low <= e.at <= high:
                downloads[self._side(user, e)] += e.value
        return {"userId": user, "reactions": reactions, "downloads": downloads}

    def _side(self, user: int, e: E) -> str:
        return "followers" if self.is_follower_at(user, e.user_id, e.at) else "nonFollowers"

    def activity(self, user: int, days: int = 28, tz: str = "UTC") -> dict[str, Any]:
        zone = ZoneInfo(tz)
        since = self.as_of - timedelta(days=days)
        grid = [[0] * 24 for _ in range(7)]
        counted = [(e, 1) for e in self.reaction_turn_ons(user)]
        counted += [(e, e.value) for e in self.received(user, ACTIVITY_ADDITIVE)]
        for e, amount in counted:
            if since < e.at <= self.as_of:
                local = e.at.astimezone(zone)
                grid[local.weekday()][local.hour] += amount
        cells = sorted((-grid[d][h], d, h) for d in range(7) for h in range(24) if grid[d][h] > 0)
        best = [{"weekday": d, "hour": h, "count": -count} for count, d, h in cells[:3]]
        return {"userId": user, "tz": tz, "grid": grid, "bestHours": best}


# --- peers -------------------------------------------------------------------------------------------------------


def metrics_at(events: list[E], excluded: set[int], at: datetime) -> Oracle:
    """``user:metrics`` as of ``at`` (the existing oracle over the events that exist then)."""
    oracle = Oracle(now=at, excluded=set(excluded))
    oracle.apply_all(the_log(events, at))
    return oracle


def peer_values(
    events: list[E], excluded: set[int], users: Iterable[int], as_of: datetime
) -> dict[int, dict[str, Any]]:
    """Each user's peer metrics at ``as_of``, with ``uploadCount`` (engagementScore a Decimal, exact)."""
    now = metrics_at(events, excluded, as_of)
    before = metrics_at(events, excluded, as_of - timedelta(days=30))
    values: dict[int, dict[str, Any]] = {}
    for user in users:
        m, past = now.metrics(user), before.metrics(user)
        values[user] = {
            "followerCount": m.get("followerCount", 0),
            "engagementScore": m.get("engagementScore", Decimal(0)),
            "reactionCount": m.get("reactionCount", 0),
            "downloadCount": m.get("downloadCount", 0),
            "followerGrowth30d": int(m.get("followerCount", 0)) - int(past.get("followerCount", 0)),  # type: ignore[call-overload]
            "uploadCount": m.get("uploadCount", 0),
        }
    return values


def _standing(value: Any, user: int, peers: dict[int, Any]) -> dict[str, Any]:
    below = sum(1 for v in peers.values() if v < value)
    equal = sum(1 for u, v in peers.items() if u != user and v == value)
    population = len(peers)
    percentile = round(100 * (below + equal / 2) / population, 2) if population else 0.0
    return {"below": below, "equal": equal, "population": population, "percentile": percentile}


def peers(events: list[E], excluded: set[int], user: int, users: Iterable[int], as_of: datetime) -> dict[str, Any]:
    """``insights peers USER`` at ``as_of``; ``users`` must include every user the events name."""
    values = peer_values(events, excluded, {*users, user}, as_of)
    creators = {u: v for u, v in values.items() if v["uploadCount"] > 0}
    band = follower_band(values[user]["followerCount"])
    in_band = {u: v for u, v in creators.items() if follower_band(v["followerCount"]) == band}
    metrics = {}
    for name in PEER_METRICS:
        value = values[user][name]
        overall = _standing(value, user, {u: v[name] for u, v in creators.items()})
        overall["band"] = _standing(value, user, {u: v[name] for u, v in in_band.items()})
        shown = float(value) if name == "engagementScore" else value
        metrics[name] = {"value": shown, **overall}
    return {"userId": user, "asOf": as_of.isoformat(), "band": band, "metrics": metrics}


# --- achievements ------------------------------------------------------------------------------------------------


def _badge_events(log: list[E], excluded: set[int], user: int) -> dict[str, list[E]]:
    """The events that move each badge's metric, in event order (excluded actors' events removed)."""
    badges: dict[str, list[E]] = {"followers": [], "reactions": [], "downloads": [], "uploads": []}
    for e in log:
        if e.user_id in excluded:
            continue
        if e.metric_type == "Follow" and e.entity_type == "User" and e.entity_id == user and e.user_id != user:
            badges["followers"].append(e)
        elif e.metric_type in REACTION_TYPES and e.owner_id == user and e.user_id != user:
            badges["reactions"].append(e)
        elif e.metric_type == "Download" and e.owner_id == user:
            badges["downloads"].append(e)
        elif e.metric_type == "Upload" and e.user_id == user:
            badges["uploads"].append(e)
    return badges


def achievements(events: list[E], excluded: set[int], user: int, as_of: datetime) -> dict[str, Any]:
    """``insights achievements USER``: each tier at the first event after which the running value reaches it."""
    earned = []
    for badge, badge_events in _badge_events(the_log(events, as_of), excluded, user).items():
        states: dict[Key, bool] = {}
        total = 0
        tiers = list(TIERS)
        for e in badge_events:
            if badge == "downloads":
                total += e.value
                running = total
            else:
                states[key_of(e)] = e.value > 0
                running = sum(states.values())
            while tiers and running >= tiers[0]:
                earned.append(
                    {"badge": badge, "tier": tiers.pop(0), "earnedAt": e.at.isoformat(), "eventId": e.event_id}
                )
    return {"userId": user, "earned": earned}
