-- Every user's metrics as computed by the snapshot job (app/jobs/snapshot.py), so that a cache miss reads one row
-- per user instead of every key the user owns. A row is the exact result of the read path's own computation at the
-- run's time (`computedAt`); it is served on a miss while it is still exact:
-- - no row of the user's arrived since the last run's slice (eventArrivals; the job keeps `inserted_after`);
-- - `validUntil` (the first instant one of the user's counting events leaves the engagement window) is still ahead;
-- - the excluded set and the weights are those the rows were computed with (the job's state).
-- Otherwise the user is computed in full, as without the snapshot. Counts are Int64 like the read path's.
-- `engagement` is the score in units of 1/10,000.
CREATE TABLE IF NOT EXISTS userMetricsSnapshot
(
    userId          Int64,
    followerCount   Int64,
    followingCount  Int64,
    modelCount      Int64,
    postCount       Int64,
    imageCount      Int64,
    reactionCount   Int64,
    downloadCount   Int64,
    generationCount Int64,
    engagement      Int64,
    validUntil      DateTime64(3, 'UTC'),
    computedAt      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computedAt)
ORDER BY userId
SETTINGS index_granularity = 256;
