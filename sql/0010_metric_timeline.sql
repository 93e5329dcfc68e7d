-- Every user's state counts over time, hour by hour, kept by the snapshot job (app/jobs/timeline.py), so that a
-- history request reads one row per hour with a change instead of every key the user ever had (a year of the most
-- active user's reactions received is about 300,000 keys at 10 million events; the hours are at most 8,760).
--
-- Four kinds of rows, each one version per sort key (the newest `version` wins; read with FINAL):
-- - `key`: one state key's part in one user's count: at `hour` the key's state at the end of the hour differs from
--   its state at the end of the key's previous hour with an event, by `delta` (+1 on, -1 off; 0 once the change
--   went away, e.g. after a late event). `subject` is the user whose count it is (the followed user, the follower,
--   the uploader, the owner of the image); `keyType, entityType, entityId, actor` name the key.
-- - `cell`: the sum of every key's `delta` of (`subject`, `metric`) at `hour`: the change of the count in that hour.
-- - `day`: the same for a whole day (`hour` is the day's first), so that a year reads 365 rows, not 8,760.
-- - `cut`: one row (subject 0): the changelog position the other rows are exact up to (`delta`, ms since the epoch)
--   and the excluded set they were computed with (`note`). A reader adds, for the keys that changed after it, the
--   difference between their new and their stored rows.
-- A run writes its `key` rows, the `cell` and `day` rows they change and the `cut` row in one insert into this
-- unpartitioned table, which ClickHouse applies whole or not at all: a reader never sees a sum without the keys
-- that made it.
-- Owner-side counts leave out the owner's own actions and those of excluded users, as every read does; a change
-- of the excluded set makes the next run rebuild the table, and readers use the raw log until then.
CREATE TABLE IF NOT EXISTS metricTimeline
(
    subject     Int64,
    metric      LowCardinality(String),
    kind        Enum8('cell' = 1, 'key' = 2, 'cut' = 3, 'day' = 4),
    keyType     LowCardinality(String),
    entityType  LowCardinality(String),
    entityId    Int64,
    actor       Int64,
    hour        DateTime('UTC'),
    delta       Int64,
    note        String,
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (subject, metric, kind, keyType, entityType, entityId, actor, hour)
SETTINGS index_granularity = 1024;
