-- Every user's reactions per image as the latest-state table resolves them, kept by the snapshot job
-- (app/jobs/reaction_snapshot.py), so that a reactions miss is one key-value lookup per image instead of a read of
-- the user's range of `stateByActor`: a user with 190,000 state keys spreads a page of 100 images over about 140
-- granules, and the cost grew with the user's activity (p50 10 ms, p99 18-23 ms on the 10M-event benchmark, 5 ms
-- of it fixed) where a multi-get of 100 keys costs about 3 ms whoever the user is.
-- One row per (user, image) with any reaction event: `flags` (Like 1, Heart 2, Laugh 4, Cry 8) and, in the same bit
-- order, the version of the event that set each bit as the cache writes it ('0': no event for that bit). A row is
-- exact when written and stays exact until a reaction event of its key arrives; a reader serves it only when
-- nothing of the key arrived after the job's last slice (the `eventArrivals` changelog) and resolves the others from
-- `stateByActor`. A key without a row has no reaction event at all. Row (0, 0) carries, in `versions[1]`, the
-- generation of the last finished full run, so that a table lost or recreated under a state saying "ready" is
-- never read as users without reactions. One job run writes at a time (its lock): the last write is the newest.
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
