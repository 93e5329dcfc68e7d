-- Aggregate tables for the read path, kept by materialized views on every insert into the event log.
--
-- Reading metrics for 100 users from the raw log costs 0.6-0.8 s at 10 million events (every key of every user
-- has to be re-derived from its events). These tables hold one row per state key (after merges) and one row per
-- (owner, metric, day) of additive events, in the orderings the reads need. They stay exact under duplicate and
-- reordered delivery:
-- - state keys keep argMax over (createdAt, eventId): a duplicate row cannot change it, an older row cannot win;
-- - additive buckets keep the row count next to the exact number of distinct eventIds; a bucket where the two
--   differ has seen a redelivery and is re-read from the raw log (grouped by eventId) instead of trusted.
-- Rows whose owner is not known yet (ownerId 0) stay out of the owner-side tables; they are written again with
-- the owner once it is known (see app/owners.py).
--
-- State metric types (DESIGN.md section 3) are listed here and in app/events.py (STATE_TYPES); a test keeps the
-- lists equal. Every other type except the Engagement gauge is additive.

CREATE TABLE IF NOT EXISTS stateByOwner
(
    ownerId     Int64,
    metricType  LowCardinality(String),
    entityType  LowCardinality(String),
    entityId    Int64,
    userId      Int64,
    latest      AggregateFunction(argMax, Int64, Tuple(DateTime64(3, 'UTC'), String)),
    lastAt      SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (ownerId, metricType, entityType, entityId, userId)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS stateByOwnerMv TO stateByOwner AS
SELECT ownerId, metricType, entityType, entityId, userId,
       argMaxState(metricValue, (createdAt, toString(eventId))) AS latest,
       max(createdAt) AS lastAt
FROM entityMetricEvents
WHERE ownerId != 0
  AND metricType IN ('Follow', 'Upload', 'ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry')
GROUP BY ownerId, metricType, entityType, entityId, userId;

CREATE TABLE IF NOT EXISTS stateByActor
(
    userId      Int64,
    metricType  LowCardinality(String),
    entityType  LowCardinality(String),
    entityId    Int64,
    latest      AggregateFunction(argMax, Int64, Tuple(DateTime64(3, 'UTC'), String)),
    version     SimpleAggregateFunction(max, Tuple(DateTime64(3, 'UTC'), String))
)
ENGINE = AggregatingMergeTree
ORDER BY (userId, metricType, entityType, entityId)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS stateByActorMv TO stateByActor AS
SELECT userId, metricType, entityType, entityId,
       argMaxState(metricValue, (createdAt, toString(eventId))) AS latest,
       max((createdAt, toString(eventId))) AS version
FROM entityMetricEvents
WHERE metricType IN ('Follow', 'Upload', 'ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry')
GROUP BY userId, metricType, entityType, entityId;

CREATE TABLE IF NOT EXISTS additiveDaily
(
    ownerId     Int64,
    metricType  LowCardinality(String),
    day         Date,
    total       SimpleAggregateFunction(sum, Int64),
    rowCount    SimpleAggregateFunction(sum, UInt64),
    events      AggregateFunction(uniqExact, UUID)
)
ENGINE = AggregatingMergeTree
ORDER BY (ownerId, metricType, day)
SETTINGS index_granularity = 1024;

CREATE MATERIALIZED VIEW IF NOT EXISTS additiveDailyMv TO additiveDaily AS
SELECT ownerId, metricType, toDate(createdAt) AS day,
       sum(metricValue) AS total, count() AS rowCount, uniqExactState(eventId) AS events
FROM entityMetricEvents
WHERE ownerId != 0
  AND metricType NOT IN ('Follow', 'Upload', 'ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry',
                         'Engagement')
GROUP BY ownerId, metricType, day;

-- Users whose actions count for nobody (reaction farms, banned accounts): a managed list, latest change wins.
CREATE TABLE IF NOT EXISTS excludedUsers
(
    userId      Int64,
    excluded    UInt8,
    reason      String,
    changedAt   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(changedAt)
ORDER BY userId;

-- Existing events (a database created before this version): fill the tables once. Rows inserted between the
-- views' creation and this fill are counted twice in additiveDaily's rowCount, which its duplicate check
-- detects; state keys are unaffected by duplicates.
INSERT INTO stateByOwner
SELECT ownerId, metricType, entityType, entityId, userId,
       argMaxState(metricValue, (createdAt, toString(eventId))), max(createdAt)
FROM entityMetricEvents
WHERE ownerId != 0
  AND metricType IN ('Follow', 'Upload', 'ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry')
GROUP BY ownerId, metricType, entityType, entityId, userId;

INSERT INTO stateByActor
SELECT userId, metricType, entityType, entityId,
       argMaxState(metricValue, (createdAt, toString(eventId))), max((createdAt, toString(eventId)))
FROM entityMetricEvents
WHERE metricType IN ('Follow', 'Upload', 'ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry')
GROUP BY userId, metricType, entityType, entityId;

INSERT INTO additiveDaily
SELECT ownerId, metricType, toDate(createdAt), sum(metricValue), count(), uniqExactState(eventId)
FROM entityMetricEvents
WHERE ownerId != 0
  AND metricType NOT IN ('Follow', 'Upload', 'ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry',
                         'Engagement')
GROUP BY ownerId, metricType, toDate(createdAt);
