"""The achievements job's SQL: every tier a set of users has earned, computed in ClickHouse from the log.

For each user and badge, the user's events are replayed in ``(createdAt, toString(eventId))`` order as value changes
(``delta``): a state key (a follow of the user, a reaction on one of the user's entities, one of the user's uploads)
changes the count by +1 when it turns on and -1 when it turns off, relative to the key's previous event (each event
id once); a download adds its value (each event id once). The running sum of the deltas is the metric's value after
each event; a tier is first reached by the row that lifts the running value to it for the first time, i.e. where the
running maximum of the rows before is below the tier and the running value is at or above it.

What counts is what the metrics count, less every excluded user's actions: followers and reactions received leave
out the user's own actions and those of excluded users (a key's owner is the largest owner any of its rows names, as
the as-of metrics resolve it); downloads count every download on the user's entities, the user's own included, but
none by an excluded user; uploads are the user's own upload keys, none while the user is excluded. Ties of
``(createdAt, eventId)`` between two keys (a reused id) are broken by the key, so the answer does not depend on the
engine's order.

Every value is a bound parameter; the f-strings splice constant fragments only.
"""

from __future__ import annotations

from app.core.metrics import EXCLUDED_USERS_SQL

OWNER_STATE_TYPES = ["Follow", "ReactionLike", "ReactionHeart", "ReactionLaugh", "ReactionCry"]

_KEY = "entityType, entityId, metricType, userId"
_EACH_EVENT_OF_A_KEY = """
    SELECT entityType, entityId, metricType, userId, eventId, toString(eventId) AS eid, any(createdAt) AS at,
           toInt64(any(metricValue) > 0) AS isOn, max(ownerId) AS rowOwner
    FROM entityMetricEvents
    WHERE {where}
    GROUP BY entityType, entityId, metricType, userId, eventId
"""
_TRANSITIONS = f"""
    SELECT *, max(rowOwner) OVER (PARTITION BY {_KEY}) AS owner,
           isOn - lagInFrame(isOn, 1, 0) OVER (PARTITION BY {_KEY} ORDER BY at, eid
                                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS delta,
           concat(entityType, ':', toString(entityId), ':', metricType, ':', toString(userId)) AS tie
    FROM ({{events}})
"""  # noqa: S608

# Followers and reactions received: keys on the users' entities (found through any row naming one of them as owner;
# every row of such a key takes part, orphans included), by others who are not excluded.
_OWNER_STATE = f"""
SELECT owner, if(metricType = 'Follow', 'followers', 'reactions') AS badge, at, eventId, eid, tie, delta
FROM ({
    _TRANSITIONS.format(
        events=_EACH_EVENT_OF_A_KEY.format(
            where="metricType IN {owner_types:Array(String)} AND (entityType, entityId) IN ("
            "SELECT entityType, entityId FROM entityMetricEvents "
            "WHERE ownerId IN {users:Array(Int64)} AND metricType IN {owner_types:Array(String)})"
        )
    )
})
WHERE owner IN {{users:Array(Int64)}} AND userId != owner AND userId NOT IN {EXCLUDED_USERS_SQL}
"""  # noqa: S608

# Uploads: the users' own upload keys (the actor is the owner). An excluded user's actions count for nobody, in a
# replay: that user's own uploads earn nothing either (uploadCount itself counts them).
_UPLOADS = f"""
SELECT userId AS owner, 'uploads' AS badge, at, eventId, eid, tie, delta
FROM ({
    _TRANSITIONS.format(
        events=_EACH_EVENT_OF_A_KEY.format(
            where="userId IN {users:Array(Int64)} AND metricType = 'Upload' "
            "AND entityType IN ('Model', 'Post', 'Image')"
        )
    )
})
WHERE userId NOT IN {EXCLUDED_USERS_SQL}
"""  # noqa: S608

# Downloads on the users' entities, each event id once, by anyone not excluded (the owner too).
_DOWNLOADS = f"""
SELECT owner, 'downloads' AS badge, at, eventId, toString(eventId) AS eid, '' AS tie, val AS delta
FROM (
    SELECT eventId, max(ownerId) AS owner, any(userId) AS actor, any(createdAt) AS at, toInt64(any(metricValue)) AS val
    FROM entityMetricEvents
    WHERE ownerId IN {{users:Array(Int64)}} AND metricType = 'Download'
    GROUP BY eventId
)
WHERE actor NOT IN {EXCLUDED_USERS_SQL}
"""  # noqa: S608

# Rows: (user, badge, tier, earnedAt, eventId, version); the last row is a marker (user 0) carrying the version alone,
# so that a computation that found nothing still has one. ``version`` is the statement's start on the engine's clock.
EARNED_SQL = f"""
SELECT owner, badge, toUInt32(tier), at, eventId, now64(6, 'UTC') AS version
FROM (
    SELECT owner, badge, at, eventId, running,
           max(running) OVER (PARTITION BY owner, badge ORDER BY at, eid, tie
                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
    FROM (
        SELECT owner, badge, at, eventId, eid, tie,
               sum(delta) OVER (PARTITION BY owner, badge ORDER BY at, eid, tie
                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running
        FROM ({_OWNER_STATE} UNION ALL {_UPLOADS} UNION ALL {_DOWNLOADS})
    )
    WHERE running > 0
)
ARRAY JOIN arrayFilter(t -> t > before AND t <= running, {{tiers:Array(Int64)}}) AS tier
UNION ALL
SELECT toInt64(0), '', toUInt32(0), toDateTime64(0, 3, 'UTC'), toUUID('00000000-0000-0000-0000-000000000000'),
       now64(6, 'UTC')
"""  # noqa: S608

# The stored state of the users' tiers: the newest row of each.
STORED_SQL = """
SELECT userId, badge, tier, argMax(earned, version) AS e, argMax(earnedAt, version), argMax(eventId, version)
FROM achievementsEarned
WHERE userId IN {users:Array(Int64)}
GROUP BY userId, badge, tier
"""

# The users' announced tiers (the durable registry).
ANNOUNCED_SQL = """
SELECT DISTINCT userId, badge, tier FROM achievementsAnnounced WHERE userId IN {users:Array(Int64)}
"""

# Of the given announced keys, those ClickHouse has held since before ``held_before`` (their Redis registry fields may
# go). Keys: (user, badge, tier).
HELD_SQL = """
SELECT userId, badge, tier FROM achievementsAnnounced
WHERE userId IN {users:Array(Int64)}
GROUP BY userId, badge, tier
HAVING min(recordedAt) <= {held_before:DateTime64(3, 'UTC')}
"""

# Every user who may have earned something, in user order from ``after`` (a full run's work list): owners of state
# keys and downloads, uploaders, and users with stored tiers (which a full run may have to take back).
ALL_USERS_SQL = """
SELECT u FROM (
    SELECT DISTINCT ownerId AS u FROM stateByOwner WHERE metricType IN {owner_types:Array(String)}
    UNION DISTINCT
    SELECT DISTINCT ownerId FROM additiveDaily WHERE metricType = 'Download'
    UNION DISTINCT
    SELECT DISTINCT userId FROM stateByActor WHERE metricType = 'Upload'
    UNION DISTINCT
    SELECT DISTINCT userId FROM achievementsEarned
)
WHERE u > {after:Int64}
ORDER BY u
"""

# The users whose badges rows in the changelog slice may change: owners named by the rows (uploaders are the owners
# of their uploads; an orphan adopted later arrives again with its owner).
ARRIVED_USERS_SQL = """
SELECT DISTINCT ownerId FROM eventArrivals
WHERE insertedAt > {after:DateTime64(3, 'UTC')} AND insertedAt <= {until:DateTime64(3, 'UTC')}
  AND ownerId > 0 AND metricType IN {types:Array(String)}
"""
ARRIVAL_TYPES = [*OWNER_STATE_TYPES, "Upload", "Download"]
