-- The current engagement score of every user with one (units of 1/10,000), written by recompute_engagement when
-- it changes; the rank job reads it. Latest computation wins. The trend over time is in entityMetricEvents
-- (metricType 'Engagement', one event per change).
CREATE TABLE IF NOT EXISTS engagementCurrent
(
    userId      Int64,
    score       Int64,
    computedAt  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computedAt)
ORDER BY userId;
