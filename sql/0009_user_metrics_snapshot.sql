-- Every user's metrics as computed by the snapshot job (app/jobs/snapshot.py), so that a cache miss reads one row
-- per user instead of every key the user owns. A row is the exact result of the read path's own computation at the
-- run's time, and stays exact while no row of the user arrives:
-- - counts do not change without a new row;
-- - the engagement score only falls as counting events leave the 30-day window: `dropAt`/`dropWeight` list when
--   each counting key or event of the next `SNAPSHOT_HORIZON_S` leaves it and what it takes off; the score at an
--   instant is `engagement` minus the drops at or before it, until `validUntil` (the run's time + the horizon;
--   far in the future for a user with nothing counting in the window).
-- A reader serves a row only if nothing of the user arrived since the job's last slice, `validUntil` is ahead, and
-- the excluded set and the weights are those the rows were computed with; otherwise it computes the user in full.
-- `engagement` and `dropWeight` are in units of 1/10,000.
-- A key-value table: a miss looks up 100 users by key (a RocksDB multi-get, about 5 ms on the 10M-event benchmark,
-- against 20 ms for the same rows in a MergeTree, where every user is a separate granule to read). A write replaces
-- the user's row; one job run writes at a time (its lock), so the last write is the newest. `computedAt` is the
-- run's time, for operators.
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
    dropAt          Array(DateTime64(3, 'UTC')),
    dropWeight      Array(Int64),
    validUntil      DateTime64(3, 'UTC'),
    computedAt      DateTime64(3, 'UTC')
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY userId;
