-- Progress of `python -m app backfill`: per legacy source (and --since), the key of the last chunk written to
-- entityMetricEvents and the rows done so far. Written after each chunk's insert; the latest write wins.
CREATE TABLE IF NOT EXISTS backfillCheckpoints
(
    name        String,
    lastKey     String,
    rowsDone    UInt64,
    updatedAt   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updatedAt)
ORDER BY name;
