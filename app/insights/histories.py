"""The insights' histories (sql/0013): each follow key's changes and each received reaction key's turn-ons, one
row per key, kept by the snapshot job (``app.jobs.insight_histories``); and the row sources readers take them from.

A reader never trusts a row blindly: the keys with arrivals after the table's cut are recomputed from the log in
the same query, and a table without a cut is not read at all (the log is). So an
insight is exact and fresh whatever the job did, and fast once the job ran.

The sources are SQL fragments with the same columns whichever way they read:
- follow rows ``(follower, at, ord, on)``: the creator's follow events (or changes) with ``at <= asof``, ``ord``
  ordering rows of one follower at one instant (the event id's text from the log, the change's position from the
  table; one follower's rows always come from one of the two);
- turn-ons ``(actor, at)``: the instants in ``[lo, hi]`` at which a reaction key on the creator's entities turned
  on (off -> on in event order).
Both leave out excluded actors and the creator's own actions. Every value is a bound parameter: ``user``,
``asof``, ``lo``, ``hi``, and the changed keys (``Corrections.params``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.core.events import as_utc
from app.core.metrics import EXCLUDED_USERS_SQL
from app.derived.changelog import ARRIVALS_KEPT
from app.stores.clickhouse import ClickHouse

FOLLOWS_TABLE = "followHistory"
REACTIONS_TABLE = "reactionHistory"
CUTS_TABLE = "insightCuts"
REACTIONS = "('ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry')"

# -- Building (the job) ---------------------------------------------------------------------------------------
# Every key ``{keys}`` selects, rewritten whole from all its events (duplicates are one tuple in groupUniqArray).
FOLLOW_BUILD_SQL = """
INSERT INTO followHistory (followee, follower, ats, ons, version)
SELECT followee, follower, arrayFilter((x, m) -> m, arrayMap(e -> e.1, evs), mask),
       arrayFilter((x, m) -> m, ons, mask), {version:UInt64}
FROM (
    SELECT entityId AS followee, userId AS follower,
           arraySort(groupUniqArray((createdAt, toString(eventId), toUInt8(metricValue > 0)))) AS evs,
           arrayMap(e -> e.3, evs) AS ons,
           arrayMap((o, p) -> o != p, ons, arrayPushFront(arrayPopBack(ons), toUInt8(0))) AS mask
    FROM entityMetricEvents
    WHERE entityType = 'User' AND metricType = 'Follow' AND userId != entityId AND {keys}
    GROUP BY followee, follower
)
"""

REACTION_BUILD_SQL = f"""
INSERT INTO reactionHistory (ownerId, entityType, entityId, metricType, actor, turnOns, lastAt, version)
SELECT owner, entityType, entityId, metricType, userId,
       arrayFilter((x, m) -> m, arrayMap(e -> e.1, evs),
                   arrayMap((o, p) -> o = 1 AND p = 0, ons, arrayPushFront(arrayPopBack(ons), toUInt8(0)))),
       evs[-1].1, {{version:UInt64}}
FROM (
    SELECT entityType, entityId, metricType, userId, max(ownerId) AS owner,
           arraySort(groupUniqArray((createdAt, toString(eventId), toUInt8(metricValue > 0)))) AS evs,
           arrayMap(e -> e.3, evs) AS ons
    FROM entityMetricEvents
    WHERE metricType IN {REACTIONS} AND ownerId != 0 AND {{keys}}
    GROUP BY entityType, entityId, metricType, userId
    HAVING owner != userId
)
"""  # noqa: S608

# The keys of a changelog slice, for an incremental run.
SLICE = "insertedAt > {after:DateTime64(3, 'UTC')} AND insertedAt <= {until:DateTime64(3, 'UTC')}"
FOLLOW_SLICE_KEYS = f"""(entityId, userId) IN (
    SELECT entityId, userId FROM eventArrivals WHERE {SLICE} AND entityType = 'User' AND metricType = 'Follow')
"""  # noqa: S608
REACTION_SLICE_KEYS = f"""(entityType, entityId, metricType, userId) IN (
    SELECT entityType, entityId, metricType, userId FROM eventArrivals WHERE {SLICE} AND metricType IN {REACTIONS})
"""  # noqa: S608

# -- Reading ----------------------------------------------------------------------------------------------------
_FOLLOW_EVENTS = f"""
    SELECT userId AS follower, createdAt AS at, toString(eventId) AS ord, toUInt8(metricValue > 0) AS on
    FROM entityMetricEvents
    WHERE entityType = 'User' AND entityId = {{user:Int64}} AND metricType = 'Follow'
      AND createdAt <= {{asof:DateTime64(3, 'UTC')}}
      AND userId != {{user:Int64}} AND userId NOT IN {EXCLUDED_USERS_SQL}
"""  # noqa: S608
# Table rows of followers whose follow did not change since the cut, and log rows of those whose did.
_FOLLOW_CHANGES = f"""
    SELECT follower, t.1 AS at, leftPad(toString(t.3), 10, '0') AS ord, t.2 AS on
    FROM followHistory FINAL
    ARRAY JOIN arrayZip(ats, ons, arrayEnumerate(ats)) AS t
    WHERE followee = {{{{user:Int64}}}} AND follower NOT IN {EXCLUDED_USERS_SQL}
      AND follower NOT IN {{{{changed_followers:Array(Int64)}}}} AND t.1 <= {{{{asof:DateTime64(3, 'UTC')}}}}
    {{log}}
"""  # noqa: S608

# Turn-ons from the log: each key's events in order, a window finding off -> on; only keys with an event in the
# range (``{only}``: a further restriction to some keys, or 1).
_TURN_ONS_FROM_LOG = f"""
    SELECT userId AS actor, createdAt AS at
    FROM (
        SELECT userId, createdAt, on,
               lagInFrame(on, 1, toUInt8(0)) OVER (PARTITION BY entityType, entityId, metricType, userId
                                                   ORDER BY createdAt, eid ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
                   AS prev
        FROM (
            SELECT entityType, entityId, metricType, userId, createdAt, toString(eventId) AS eid,
                   toUInt8(metricValue > 0) AS on
            FROM entityMetricEvents
            WHERE metricType IN {REACTIONS} AND createdAt <= {{{{hi:DateTime64(3, 'UTC')}}}}
              AND ownerId = {{{{user:Int64}}}} AND userId != {{{{user:Int64}}}} AND userId NOT IN {EXCLUDED_USERS_SQL}
              AND {{only}}
              AND (entityType, entityId, metricType, userId) IN (
                  SELECT entityType, entityId, metricType, userId FROM entityMetricEvents
                  WHERE metricType IN {REACTIONS} AND ownerId = {{{{user:Int64}}}}
                    AND createdAt >= {{{{lo:DateTime64(3, 'UTC')}}}} AND createdAt <= {{{{hi:DateTime64(3, 'UTC')}}}})
        )
    )
    WHERE on = 1 AND prev = 0 AND createdAt >= {{{{lo:DateTime64(3, 'UTC')}}}}
"""  # noqa: S608
_KEY = "Tuple(String, Int64, String, Int64)"
_TURN_ONS_FROM_TABLE = f"""
    SELECT actor, at
    FROM reactionHistory FINAL
    ARRAY JOIN turnOns AS at
    WHERE ownerId = {{{{user:Int64}}}} AND lastAt >= {{{{lo:DateTime64(3, 'UTC')}}}}
      AND actor != {{{{user:Int64}}}} AND actor NOT IN {EXCLUDED_USERS_SQL}
      AND (entityType, entityId, metricType, actor) NOT IN {{{{changed_keys:Array({_KEY})}}}}
      AND at >= {{{{lo:DateTime64(3, 'UTC')}}}} AND at <= {{{{hi:DateTime64(3, 'UTC')}}}}
    {{log}}
"""  # noqa: S608

# In one round trip: each table's cut (``(name, cut)``, absent: never built or lost), and the creator's keys with
# arrivals after the older usable one (not older than the changelog keeps: ``oldest``): followers whose follow
# changed, reaction keys on their entities. Without a usable cut nothing is scanned (the reader takes the log).
CHANGED_SQL = f"""
WITH cuts AS (SELECT name, argMax(cut, version) AS cut FROM {CUTS_TABLE} GROUP BY name)
SELECT (SELECT groupArray((name, cut)) FROM cuts),
       groupUniqArrayIf(userId, entityType = 'User' AND entityId = {{user:Int64}} AND metricType = 'Follow'),
       groupUniqArrayIf((toString(entityType), entityId, toString(metricType), userId),
                        ownerId = {{user:Int64}} AND metricType IN {REACTIONS})
FROM eventArrivals
WHERE insertedAt > ifNull((SELECT minOrNull(cut) FROM cuts WHERE cut >= {{oldest:DateTime64(3, 'UTC')}}),
                          toDateTime64('2299-12-31 00:00:00', 3, 'UTC'))
"""  # noqa: S608
# Past this many changed keys a reader takes the log alone (each set is bound as one parameter).
MAX_CHANGED = 1000


@dataclass(frozen=True)
class Corrections:
    """What a read takes from the history tables: None, the log alone; else the keys changed since the table's
    cut, recomputed from the log (their table rows are left out)."""

    followers: list[int] | None = None
    reaction_keys: list[tuple[str, int, str, int]] | None = None

    @classmethod
    def read(cls, ch: ClickHouse, user: int) -> Corrections:
        now = datetime.now(UTC)
        listed, followers, keys = ch.rows(CHANGED_SQL, {"user": user, "oldest": now - ARRIVALS_KEPT})[0]
        cuts = {str(name): as_utc(cut) for name, cut in listed}
        follows_cut, reactions_cut = usable_cut(cuts, FOLLOWS_TABLE, now), usable_cut(cuts, REACTIONS_TABLE, now)
        return cls(
            [int(f) for f in followers] if follows_cut is not None and len(followers) <= MAX_CHANGED else None,
            [(str(a), int(b), str(c), int(d)) for a, b, c, d in keys]
            if reactions_cut is not None and len(keys) <= MAX_CHANGED
            else None,
        )

    def params(self) -> dict[str, Any]:
        return {"changed_followers": self.followers or [], "changed_keys": self.reaction_keys or []}

    def follow_rows(self) -> str:
        """The follow rows source (see the module's docstring)."""
        if self.followers is None:
            return _FOLLOW_EVENTS
        log = f"UNION ALL {_FOLLOW_EVENTS} AND userId IN {{changed_followers:Array(Int64)}}" if self.followers else ""
        return _FOLLOW_CHANGES.format(log=log)

    def turn_ons(self) -> str:
        """The turn-ons source (see the module's docstring)."""
        if self.reaction_keys is None:
            return _TURN_ONS_FROM_LOG.format(only="1")
        only = f"(entityType, entityId, metricType, userId) IN {{changed_keys:Array({_KEY})}}"
        return _TURN_ONS_FROM_TABLE.format(
            log=f"UNION ALL {_TURN_ONS_FROM_LOG.format(only=only)}" if self.reaction_keys else ""
        )


def write_cuts(ch: ClickHouse, cut: datetime, version: int) -> None:
    """Both tables' cut, after a run's rows."""
    ch.insert(CUTS_TABLE, [[FOLLOWS_TABLE, cut, version], [REACTIONS_TABLE, cut, version]], ["name", "cut", "version"])


def read_cuts(ch: ClickHouse) -> dict[str, datetime]:
    """Each history table's cut (absent: the table was never built, or was lost)."""
    rows = ch.rows(f"SELECT name, argMax(cut, version) FROM {CUTS_TABLE} GROUP BY name")  # noqa: S608
    return {str(name): as_utc(cut) for name, cut in rows}


def usable_cut(cuts: dict[str, datetime], table: str, now: datetime) -> datetime | None:
    """The arrival time after which a reader recomputes keys from the log, or None: read the log alone (no cut, or
    one older than the changelog keeps). A run's cut is its slice's end less the in-flight margin
    (``Slice.next_after``): rows are exact for every arrival up to it."""
    cut = cuts.get(table)
    if cut is None or cut < now - ARRIVALS_KEPT:
        return None
    return cut
