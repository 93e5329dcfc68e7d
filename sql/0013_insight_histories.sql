-- The creator insights' histories (app/insights/histories.py), kept by the snapshot job (app/jobs/insight_histories.py)
-- so that growth, retention, audience and activity read one row per key instead of every event of a creator (the
-- most-followed creator of the 10M-event benchmark has 90,000 follow events and 313,000 reactions received, spread
-- over every part of the log: 100-250 ms per read from the log, 15-20 ms from these rows).
--
-- followHistory: one row per follow key (followee, follower): the instants at which its state changed, in
-- (createdAt, eventId) order, and the state after each (duplicates and events that change nothing are dropped; a
-- follow of oneself is never kept). The state at an instant is the state after the latest change at or before it.
-- reactionHistory: one row per reaction key on an owned entity: the instants at which it turned on (off -> on in
-- event order) and the instant of its latest event. Only rows naming an owner count (as in every owner-side read);
-- a key whose owner is its actor is never kept.
-- A row is rewritten whole, from all of its key's events, whenever the key gets a row in the log (the newest
-- `version` wins; read with FINAL). Both tables keep every key whatever the excluded set: readers leave excluded
-- actors out, so a change of the set rebuilds nothing.
-- insightCuts: per table, the changelog position (`cut`) up to which every key's row is exact, written after the
-- rows of each run. A reader recomputes from the log the keys with arrivals after it (less the in-flight margin),
-- and reads the log alone while a table has no cut (never built, or lost and recreated).
CREATE TABLE IF NOT EXISTS followHistory
(
    followee    Int64,
    follower    Int64,
    ats         Array(DateTime64(3, 'UTC')),
    ons         Array(UInt8),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (followee, follower)
SETTINGS index_granularity = 1024;

CREATE TABLE IF NOT EXISTS reactionHistory
(
    ownerId     Int64,
    entityType  LowCardinality(String),
    entityId    Int64,
    metricType  LowCardinality(String),
    actor       Int64,
    turnOns     Array(DateTime64(3, 'UTC')),
    lastAt      DateTime64(3, 'UTC'),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (ownerId, entityType, entityId, metricType, actor)
SETTINGS index_granularity = 1024;

CREATE TABLE IF NOT EXISTS insightCuts
(
    name        LowCardinality(String),
    cut         DateTime64(3, 'UTC'),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY name;
