-- The event log: the source of truth (docs/architecture.md, "The event model").
-- Column names follow the seeds so existing queries carry over; eventId (idempotency key) and ownerId (owner of
-- the entity at write time) are ours.
--
-- ReplacingMergeTree collapses exact redeliveries (same key and eventId) in the background, but every query is
-- written to be correct *before* merges: state keys take argMax by (createdAt, eventId), which a duplicate
-- cannot change, and additive sums group by eventId first.
CREATE TABLE IF NOT EXISTS entityMetricEvents
(
    eventId      UUID,
    entityType   LowCardinality(String),
    entityId     Int64,
    userId       Int64,
    ownerId      Int64,
    metricType   LowCardinality(String),
    metricValue  Int64,
    createdAt    DateTime64(3, 'UTC'),
    insertedAt   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(createdAt)
ORDER BY (entityType, entityId, metricType, userId, createdAt, eventId)
SETTINGS index_granularity = 8192, deduplicate_merge_projection_mode = 'rebuild';
