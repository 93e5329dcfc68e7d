"""The SQL of the engagement job (tables in ``sql/0006_engagement_contributions.sql``).

The f-strings splice constant SQL fragments only; every value is a bound parameter. Templates keep ``{weight}``,
``{state_types}`` and ``{excluded}`` for ``app.jobs.engagement`` to fill with the shared fragments of
``app.core.metrics``.
"""

from __future__ import annotations

_KEY4 = "entityType, entityId, metricType, userId"
_NIL = "toUUID('00000000-0000-0000-0000-000000000000')"
_CONTRIB_COLUMNS = "entityType, entityId, metricType, userId, eventId, ownerId, contribution, at, ver, isOn"


def _ver(created: str, event_id: str) -> str:
    """(createdAt, eventId) packed into one UInt256 that orders as "later event, then higher id" (as in sql/0003)."""
    return (
        f"bitShiftLeft(toUInt256(toUnixTimestamp64Milli({created})), 128) + "
        f"toUInt256(reinterpretAsUInt128(reverse(unhex(replaceAll(toString({event_id}), '-', '')))))"
    )


# A state key counts its weight while its latest event is on and inside the window, for an owner who is not the
# actor; an additive event counts value x weight on the same conditions; neither counts when the actor is excluded
# (applied once, on the union: one set of excluded users per statement).
_STATE_COUNTS = "on AND lastAt >= {{since:DateTime64(3, 'UTC')}} AND owner != 0 AND userId != owner"
_EVENT_COUNTS = "at >= {{since:DateTime64(3, 'UTC')}} AND owner != 0 AND actor != owner"
_OUTER = """
SELECT entityType, entityId, metricType, userId, eventId, ownerId,
       if(userId IN {excluded}, toInt64(0), contribution) AS counted, at, ver, isOn,
       {{stamp:DateTime64(3, 'UTC')}}
FROM ("""


def _contrib_rows(state_source: str, event_source: str) -> str:
    """The contribution rows of the state keys and additive events produced by two grouped subqueries."""
    state = (
        f"SELECT {_KEY4}, {_NIL} AS eventId, owner AS ownerId, "  # noqa: S608
        f"toInt64(if({_STATE_COUNTS}, {{weight}}, 0)) AS contribution, lastAt AS at, latestVer AS ver, "
        f"on AS isOn FROM ({state_source})"
    )
    events = (
        f"SELECT et, eid, mt, actor, eventId, owner, "  # noqa: S608
        f"toInt64(if(fresh, if({_EVENT_COUNTS}, val * w, 0), if(at >= {{{{since:DateTime64(3, 'UTC')}}}}, kept, 0))), "
        f"at, {_ver('at', 'eventId')}, 1 FROM ({event_source})"
    )
    return f"{_OUTER}\n    {state}\n    UNION ALL\n    {events}\n)"


# Full run (sql/0006): every state key with an event in the window (its latest event, counting or not) and every
# additive event that counts, from the log. Every value is a bound parameter.
_FULL_STATE = f"""
        SELECT {_KEY4}, owner, latest.1 AS lastAt, {_ver("latest.1", "latest.2")} AS latestVer, on
        FROM (
        SELECT {_KEY4}, max(ownerId) AS owner, max((createdAt, toString(eventId))) AS latest,
               argMax(metricValue, (createdAt, toString(eventId))) > 0 AS on
        FROM entityMetricEvents
        WHERE createdAt >= {{{{since:DateTime64(3, 'UTC')}}}} AND metricType IN {{state_types}}
        GROUP BY {_KEY4})"""  # noqa: S608
_FULL_EVENTS = """
        SELECT eventId, any(entityType) AS et, any(entityId) AS eid, any(metricType) AS mt, any(userId) AS actor,
               max(ownerId) AS owner, any(metricValue) AS val, any({weight}) AS w, any(createdAt) AS at,
               1 AS fresh, 0 AS kept
        FROM entityMetricEvents
        WHERE createdAt >= {{since:DateTime64(3, 'UTC')}} AND metricType IN {{additive:Array(String)}}
        GROUP BY eventId"""
FULL_SQL = (
    f"INSERT INTO engagementContrib ({_CONTRIB_COLUMNS}, computedAt)"
    + _contrib_rows(_FULL_STATE, _FULL_EVENTS)
    + f"\nWHERE eventId = {_NIL} OR counted != 0"
)

# Keys whose contribution may have changed since the last run: rows that arrived since (eventArrivals, with a margin
# for inserts in flight) and counting keys whose latest event left the window.
# Every read of the changelog in one run takes the same slice (inserted_after, arrived_until], both on ClickHouse's
# clock: a row landing while the run works is left whole to the next run, never half-seen by this one.
_ARRIVED = (
    "FROM eventArrivals WHERE insertedAt > {{inserted_after:DateTime64(3, 'UTC')}} "
    "AND insertedAt <= {{arrived_until:DateTime64(3, 'UTC')}}"
)
CHANGED_KEYS_SQL = f"""
INSERT INTO engagementChanged
SELECT DISTINCT * FROM (
    SELECT entityId, userId
    {_ARRIVED} AND (metricType IN {{state_types}} OR metricType IN {{{{additive:Array(String)}}}})
    UNION ALL
    SELECT entityId, userId  -- older versions too: a superset, harmless
    FROM engagementContrib
    WHERE contribution != 0 AND at < {{{{since:DateTime64(3, 'UTC')}}}}
)
"""  # noqa: S608
# The changed keys' new rows: a state key's latest event is the later of the stored one and those that arrived
# (no stored row: no event in the window at the last run); an additive event that arrived counts once; one that did
# not keeps its stored contribution while inside the window.
_NEW_STATE = f"""
        SELECT {_KEY4}, max(ownerId) AS owner, max(at) AS lastAt, max(ver) AS latestVer, argMax(isOn, ver) AS on
        FROM (
            SELECT {_KEY4}, ownerId, at, ver, isOn FROM engagementOld WHERE eventId = {_NIL}
            UNION ALL
            SELECT {_KEY4}, ownerId, createdAt, {_ver("createdAt", "eventId")}, metricValue > 0
            {_ARRIVED} AND metricType IN {{state_types}}
        )
        GROUP BY {_KEY4}"""  # noqa: S608
_NEW_EVENTS = f"""
        SELECT eventId, any(entityType) AS et, any(entityId) AS eid, any(metricType) AS mt, any(userId) AS actor,
               max(ownerId) AS owner, maxIf(metricValue, arrived) AS val, any({{weight}}) AS w,
               any(createdAt) AS at, max(arrived) AS fresh, anyIf(contribution, NOT arrived) AS kept
        FROM (
            SELECT {_KEY4}, eventId, ownerId, metricValue, createdAt, 1 AS arrived, toInt64(0) AS contribution
            {_ARRIVED} AND metricType IN {{{{additive:Array(String)}}}}
            UNION ALL
            SELECT {_KEY4}, eventId, ownerId, 0, at, 0, contribution FROM engagementOld WHERE eventId != {_NIL}
        )
        GROUP BY eventId"""  # noqa: S608
NEW_SQL = f"INSERT INTO engagementNew ({_CONTRIB_COLUMNS}, computedAt)" + _contrib_rows(_NEW_STATE, _NEW_EVENTS)

# What the changed keys contributed before (the latest version of each), read once. Selected by (entityId, userId)
# alone, every version of a key together: a superset of the changed keys (the same user's other reactions on the
# same image, say), which is harmless: the new rows recompute an unchanged key from its stored latest event (an
# additive event that did not arrive again keeps its contribution while inside the window), so its difference is 0.
# WHERE, not PREWHERE (the engine moves the condition there itself): in cluster mode the 24.3+ analyzer does not make
# an IN in PREWHERE global, so each shard read its own empty engagementChanged and the run counted every key again.
OLD_SQL = f"""
INSERT INTO engagementOld ({_CONTRIB_COLUMNS}, computedAt)
SELECT {_CONTRIB_COLUMNS}, computedAt
FROM engagementContrib FINAL
WHERE (entityId, userId) IN (SELECT entityId, userId FROM engagementChanged)
"""  # noqa: S608
# Per owner: new contributions of the changed keys minus what they contributed before, and the current score.
# GLOBAL IN, said outright: this IN sits in a joined subquery, where cluster mode's prefer_global_in_and_join does
# not reach; a plain IN went to each shard as text and read that node's own (empty) scratch tables, so an owner
# whose score lives on a replica of another node got no previous score and the run wrote the difference alone.
DELTA_SQL = """
SELECT owner, d, prev
FROM (
    SELECT owner, toInt64(sum(c)) AS d
    FROM (
        SELECT ownerId AS owner, contribution AS c FROM engagementNew
        UNION ALL
        SELECT ownerId, -contribution FROM engagementOld
    )
    GROUP BY owner
    HAVING d != 0 AND owner != 0
) AS delta
LEFT JOIN (
    SELECT userId, score AS prev FROM engagementCurrent FINAL
    WHERE userId GLOBAL IN (SELECT ownerId FROM engagementNew UNION ALL SELECT ownerId FROM engagementOld)
) AS current ON current.userId = delta.owner
"""
# The new rows replace the old ones: every key read into engagementOld has a row in engagementNew (a state key's
# group includes its stored row; an additive event that did not arrive again is kept, or zeroed once it left).
WRITE_SQL = f"INSERT INTO engagementContrib ({_CONTRIB_COLUMNS}, computedAt) SELECT * FROM engagementNew"  # noqa: S608
SCORES_FROM_CONTRIB_SQL = (
    "SELECT ownerId, toInt64(sum(contribution)) AS score FROM engagementContrib GROUP BY ownerId HAVING score != 0"
)

CURRENT_SCORES_SQL = "SELECT userId, score FROM engagementCurrent FINAL WHERE score != 0"
# This run's stamp (sql/0008): the job's clock, but above every earlier stamp and stored score, so that what this
# run writes wins in the ReplacingMergeTrees even when the clock stepped back.
STAMP_SQL = """
SELECT greatest(
    {now:DateTime64(3, 'UTC')},
    (SELECT max(stamp) FROM engagementRuns) + toIntervalMillisecond(1),
    (SELECT max(computedAt) FROM engagementCurrent) + toIntervalMillisecond(1)
)
"""
