"""The achievements job's SQL: the tiers a set of users has earned, computed in ClickHouse from the log.

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

A computation sees the rows inserted up to ``until`` (its run's slice end: every insert that started by then has
landed) and dated up to it (an event dated ahead counts from the run whose slice its time falls in), and records per
(user, badge) where its replay ended (``achievementsProgress``): the last event, the running value and the running
maximum, with ``seenUntil = until``. Two ways to compute:

- ``FULL_SQL`` replays each user's whole history from zero;
- ``CONTINUE_SQL`` goes on from the recorded progress with the events after its last event, which are all in the
  changelog slice (a later event inserted by ``seenUntil`` would have been replayed); each state key's transitions
  are taken against the key's own history. Only for users none of whose slice rows inserted after ``seenUntil`` falls
  at or before the recorded last event (``LATE_USERS_SQL``): a late event, or a row written again (a redelivery, a
  replayed dead letter, a backfill re-run), sends the user to the full replay, and so does an event inserted before
  the slice but dated into it.

Both return the tiers first reached (rows with ``tier`` > 0) and one row per (user, badge) replayed with ``tier`` 0:
the last event, the running value (in ``running``) and the running maximum (``peak``).

Every value is a bound parameter; the f-strings splice constant fragments only.
"""

from __future__ import annotations

from app.core.metrics import EXCLUDED_USERS_SQL

OWNER_STATE_TYPES = ["Follow", "ReactionLike", "ReactionHeart", "ReactionLaugh", "ReactionCry"]
ARRIVAL_TYPES = [*OWNER_STATE_TYPES, "Upload", "Download"]

_UNTIL = "{until:DateTime64(3, 'UTC')}"
_SLICE = f"insertedAt > {{after:DateTime64(3, 'UTC')}} AND insertedAt <= {_UNTIL}"
# Rows inserted before the slice but dated into it (a producer may date an event up to an hour ahead; a computation
# leaves out events dated after its slice's end, and takes them once their time has come).
_DATED_INTO_SLICE = (
    f"insertedAt > {{after:DateTime64(3, 'UTC')}} - INTERVAL 1 DAY AND insertedAt <= {{after:DateTime64(3, 'UTC')}} "
    f"AND createdAt > {{after:DateTime64(3, 'UTC')}} AND createdAt <= {_UNTIL}"
)
_KEY = "entityType, entityId, metricType, userId"
# Each event of the selected keys once, as the computation sees the log (rows inserted by ``until``).
_EACH_EVENT_OF_A_KEY = """
    SELECT entityType, entityId, metricType, userId, eventId, toString(eventId) AS eid, any(createdAt) AS at,
           toInt64(any(metricValue) > 0) AS isOn, max(ownerId) AS rowOwner
    FROM entityMetricEvents
    WHERE {where} AND createdAt <= {{until:DateTime64(3, 'UTC')}}
    GROUP BY entityType, entityId, metricType, userId, eventId
    HAVING min(insertedAt) <= {{until:DateTime64(3, 'UTC')}}
"""
_TRANSITIONS = f"""
    SELECT *, max(rowOwner) OVER (PARTITION BY {_KEY}) AS owner,
           isOn - lagInFrame(isOn, 1, 0) OVER (PARTITION BY {_KEY} ORDER BY at, eid
                                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS delta,
           concat(entityType, ':', toString(entityId), ':', metricType, ':', toString(userId)) AS tie
    FROM ({{events}})
"""  # noqa: S608


def _state_rows(owner_keys: str, upload_keys: str) -> str:
    """Transition rows (owner, badge, at, eventId, eid, tie, delta) of the selected keys: followers and reactions
    received (by others who are not excluded), and uploads (the user's own, unless excluded)."""
    owned = _TRANSITIONS.format(events=_EACH_EVENT_OF_A_KEY.format(where=owner_keys))
    uploads = _TRANSITIONS.format(events=_EACH_EVENT_OF_A_KEY.format(where=upload_keys))
    return f"""
SELECT owner, if(metricType = 'Follow', 'followers', 'reactions') AS badge, at, eventId, eid, tie, delta
FROM ({owned})
WHERE owner IN {{users:Array(Int64)}} AND userId != owner AND userId NOT IN {EXCLUDED_USERS_SQL}
UNION ALL
SELECT userId AS owner, 'uploads' AS badge, at, eventId, eid, tie, delta
FROM ({uploads})
WHERE userId NOT IN {EXCLUDED_USERS_SQL}
"""  # noqa: S608


def _download_rows(source: str, where: str) -> str:
    """Download rows (owner, badge, at, eventId, eid, tie, delta): each event id once, by anyone not excluded."""
    return f"""
SELECT owner, 'downloads' AS badge, at, eventId, toString(eventId) AS eid, '' AS tie, val AS delta
FROM (
    SELECT eventId, max(ownerId) AS owner, any(userId) AS actor, any(createdAt) AS at, toInt64(any(metricValue)) AS val
    FROM {source}
    WHERE ownerId IN {{users:Array(Int64)}} AND metricType = 'Download' AND {where} AND createdAt <= {_UNTIL}
    GROUP BY eventId
    HAVING min(insertedAt) <= {_UNTIL}
)
WHERE actor NOT IN {EXCLUDED_USERS_SQL}
"""  # noqa: S608


_UPLOAD_KEYS = "userId IN {users:Array(Int64)} AND metricType = 'Upload' AND entityType IN ('Model', 'Post', 'Image')"
_OWNER_KEYS = "metricType IN {owner_types:Array(String)}"

# Running value and maximum from (startRunning, startPeak), the tiers first reached, and the last row of each
# (user, badge) as tier 0 (the progress).
_TIERS = """
SELECT owner, badge, toUInt32(tier) AS tier, at, eventId, eid, running, peak
FROM (
    SELECT owner, badge, at, eventId, eid, running,
           greatest(startPeak, max(running) OVER (PARTITION BY owner, badge ORDER BY at, eid, tie
                                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) AS before,
           greatest(startPeak, max(running) OVER (PARTITION BY owner, badge)) AS peak,
           row_number() OVER (PARTITION BY owner, badge ORDER BY at, eid, tie)
               = count() OVER (PARTITION BY owner, badge) AS last
    FROM (
        SELECT owner, badge, at, eventId, eid, tie, startPeak,
               startRunning + sum(delta) OVER (PARTITION BY owner, badge ORDER BY at, eid, tie
                                               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running
        FROM ({rows})
    )
)
ARRAY JOIN arrayConcat(arrayFilter(t -> t > before AND t <= running, {{tiers:Array(Int64)}}), if(last, [0], [])) AS tier
"""

# Every user's whole history, from zero.
_FULL_ROWS = f"""
SELECT *, toInt64(0) AS startRunning, toInt64(0) AS startPeak
FROM (
    {
    _state_rows(
        _OWNER_KEYS + " AND (entityType, entityId) IN (SELECT entityType, entityId FROM entityMetricEvents "
        "WHERE ownerId IN {users:Array(Int64)} AND metricType IN {owner_types:Array(String)})",
        _UPLOAD_KEYS,
    )
}
    UNION ALL
    {_download_rows("entityMetricEvents", "1")}
)
"""  # noqa: S608
FULL_SQL = _TIERS.format(rows=_FULL_ROWS)

# The recorded progress of the users (the newest of each (user, badge)); badge '' is the user's own row: when it was
# last computed (``seenUntil``).
_PROGRESS = """
SELECT userId AS pUser, badge AS pBadge, argMax(lastAt, version) AS pAt, argMax(lastEid, version) AS pEid,
       argMax(running, version) AS pRunning, argMax(peak, version) AS pPeak, argMax(seenUntil, version) AS pSeen
FROM achievementsProgress
WHERE userId IN {users:Array(Int64)}
GROUP BY userId, badge
"""
_ARRIVED_KEYS = f"SELECT {_KEY} FROM eventArrivals WHERE {_SLICE} AND ownerId IN {{users:Array(Int64)}}"  # noqa: S608
# The events after each (user, badge)'s recorded last event: transitions of the keys with a row in the slice (read
# against each key's whole history), downloads in the slice. A (user, badge) without a record starts from zero.
_CONTINUE_ROWS = f"""
SELECT r.owner AS owner, r.badge AS badge, r.at AS at, r.eventId AS eventId, r.eid AS eid, r.tie AS tie,
       r.delta AS delta, p.pRunning AS startRunning, p.pPeak AS startPeak
FROM (
    {
    _state_rows(
        _OWNER_KEYS + f" AND ({_KEY}) IN ({_ARRIVED_KEYS} AND metricType IN {{owner_types:Array(String)}})",
        _UPLOAD_KEYS + f" AND ({_KEY}) IN ({_ARRIVED_KEYS} AND metricType = 'Upload')",
    )
}
    UNION ALL
    {_download_rows("eventArrivals", _SLICE)}
) AS r
LEFT JOIN ({_PROGRESS}) AS p ON r.owner = p.pUser AND r.badge = p.pBadge
WHERE (r.at, r.eid) > (p.pAt, p.pEid)
"""  # noqa: S608
CONTINUE_SQL = _TIERS.format(rows=_CONTINUE_ROWS)

# The users who must be replayed whole: never computed, with a row in the slice inserted after their last
# computation that falls at or before the last event replayed for its badge, or with a row dated into the slice that
# was inserted before it.
LATE_USERS_SQL = f"""
SELECT DISTINCT a.owner
FROM (
    SELECT if(metricType = 'Upload', userId, ownerId) AS owner,
           multiIf(metricType = 'Follow', 'followers', metricType = 'Upload', 'uploads',
                   metricType = 'Download', 'downloads', 'reactions') AS badge,
           createdAt AS at, toString(eventId) AS eid, insertedAt
    FROM eventArrivals
    WHERE {_SLICE} AND ownerId IN {{users:Array(Int64)}} AND metricType IN {{types:Array(String)}}
) AS a
LEFT JOIN ({_PROGRESS}) AS p ON a.owner = p.pUser AND a.badge = p.pBadge
LEFT JOIN (SELECT pUser AS sUser, pSeen AS seen FROM ({_PROGRESS}) WHERE pBadge = '') AS s ON a.owner = s.sUser
WHERE s.sUser = 0 OR (a.insertedAt > s.seen AND (a.at, a.eid) <= (p.pAt, p.pEid))
UNION DISTINCT
SELECT ownerId FROM eventArrivals
WHERE {_DATED_INTO_SLICE} AND ownerId IN {{users:Array(Int64)}} AND metricType IN {{types:Array(String)}}
"""  # noqa: S608

PROGRESS_COLUMNS = ["userId", "badge", "lastAt", "lastEid", "running", "peak", "seenUntil", "version"]

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
ARRIVED_USERS_SQL = f"""
SELECT DISTINCT ownerId FROM eventArrivals
WHERE (({_SLICE}) OR ({_DATED_INTO_SLICE})) AND ownerId > 0 AND metricType IN {{types:Array(String)}}
"""  # noqa: S608
