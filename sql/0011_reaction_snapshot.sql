-- Every user's reactions per image as the latest-state table resolves them, kept by the snapshot job
-- (app/jobs/reaction_snapshot.py), so that a reactions miss is one key-value multi-get instead of a read of the
-- user's range of `stateByActor`: a user with 190,000 state keys spreads a page of 100 images over about 140
-- granules, and that read's cost grew with the user's activity (p50 10 ms, p99 18-23 ms on the 10M-event
-- benchmark), where a multi-get costs the same whoever the user is.
-- Two kinds of rows, both keyed by (userId, imageId):
-- - a state row (userId > 0), written by the job: `flags` (Like 1, Heart 2, Laugh 4, Cry 8) and, in the same bit
--   order, the version of the event that set each bit as the cache writes it ('0': no event for that bit). It is
--   exact when written and stays exact until a reaction event of its key arrives.
-- - an arrival mark (userId = -user), written by the view below with every reaction: `computedAt` is the
--   arrival time of the key's latest insert. A reader serves a state row only when the mark is not later than the
--   job's last slice (the same changelog position the job's `eventArrivals` slice ends at), and reads the others
--   from `stateByActor`; so one multi-get answers both "what was the state" and "did it change since".
-- A key with neither row has no reaction event at all. Row (0, 0), written after every run's rows, carries in
-- `versions` the generation of the last finished full run and the changelog position (ms) up to which the state
-- rows are exact: readers need nothing else, and a table lost or recreated (no such row) is never read as users
-- without reactions. One job run writes at a time (its lock): the last write of a state row is the newest.
CREATE TABLE IF NOT EXISTS reactionSnapshot
(
    userId      Int64,
    imageId     Int64,
    flags       UInt8,
    versions    Array(String),
    computedAt  DateTime64(3, 'UTC')
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY (userId, imageId);

CREATE MATERIALIZED VIEW IF NOT EXISTS reactionArrivalMarksMv TO reactionSnapshot AS
SELECT -userId AS userId, entityId AS imageId, toUInt8(0) AS flags, CAST([], 'Array(String)') AS versions,
       max(insertedAt) AS computedAt
FROM entityMetricEvents
WHERE metricType IN ('ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry') AND entityType = 'Image'
GROUP BY userId, entityId;
