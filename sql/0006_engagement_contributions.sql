-- The engagement job's incremental run (app/jobs/engagement.py) works key by key instead of owner by owner.
--
-- engagementContrib holds, for every state key with an event inside the window as of the job's last run (and every
-- additive event that counts), what it adds to its owner's score and its latest event (at, isOn, and ver: time and
-- event id packed as in 0003). A state key (entityType, entityId, metricType, userId; eventId nil) adds its weight
-- while its latest event is on and inside the window, an additive event (eventId set) adds value x weight. An
-- owner's score in engagementCurrent is the sum of its rows here. An incremental run merges the rows that arrived
-- since the last run into the stored latest events of their keys (no pass over the log), zeroes keys whose latest
-- event left the window, and moves each owner's score by the difference. A full run rebuilds the table from the log.
-- engagementChanged, engagementNew and engagementOld are the incremental run's scratch tables (Memory engine; one
-- run at a time: the job holds a lock).
CREATE TABLE IF NOT EXISTS engagementContrib
(
    entityType   LowCardinality(String),
    entityId     Int64,
    metricType   LowCardinality(String),
    userId       Int64,
    eventId      UUID,
    ownerId      Int64,
    contribution Int64,
    at           DateTime64(3, 'UTC'),
    ver          UInt256,
    isOn         UInt8,
    computedAt   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computedAt)
ORDER BY (entityType, entityId, metricType, userId, eventId)
SETTINGS index_granularity = 1024;

CREATE TABLE IF NOT EXISTS engagementChanged
(
    entityId     Int64,
    userId       Int64
)
ENGINE = Memory;

CREATE TABLE IF NOT EXISTS engagementNew AS engagementContrib ENGINE = Memory;

CREATE TABLE IF NOT EXISTS engagementOld AS engagementContrib ENGINE = Memory;

-- The log in arrival order: "which keys got rows since the last run" is a range read here, however the log's parts
-- have been merged since. Kept 7 days; a job that has not run for 6 days runs full.
CREATE TABLE IF NOT EXISTS eventArrivals
(
    insertedAt  DateTime64(3, 'UTC'),
    entityType  LowCardinality(String),
    entityId    Int64,
    metricType  LowCardinality(String),
    userId      Int64,
    eventId     UUID,
    ownerId     Int64,
    metricValue Int64,
    createdAt   DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY insertedAt
TTL toDateTime(insertedAt) + INTERVAL 7 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS eventArrivalsMv TO eventArrivals AS
SELECT insertedAt, entityType, entityId, metricType, userId, eventId, ownerId, metricValue, createdAt
FROM entityMetricEvents
WHERE metricType != 'Engagement';

-- The engagement trend: every score the job stores in engagementCurrent is also a point here, written by the same
-- insert (read with the producers' Engagement events by `history USER engagementScore`). Derived values stay out of
-- the event log, whose every insert pays for its projections and views.
CREATE TABLE IF NOT EXISTS engagementTrend
(
    userId      Int64,
    score       Int64,
    computedAt  DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (userId, computedAt);

CREATE MATERIALIZED VIEW IF NOT EXISTS engagementTrendMv TO engagementTrend AS
SELECT userId, score, computedAt
FROM engagementCurrent;
