-- Achievements (app/jobs/achievements.py): the badge tiers each user has earned, and every tier ever announced on
-- the Redis stream `achievements:earned`.
--
-- achievementsEarned: one row per (user, badge, tier) and job computation; the row with the newest `version` is
-- the tier's current state (read with argMax by `version`, or FINAL). `earned` = 1: the tier is earned, first
-- reached by the event `eventId` at `earnedAt`; `earned` = 0: it no longer is (its only makers were excluded since,
-- or late events moved the running value below it). `version` is the end of the changelog slice of the run that
-- computed it: a computation sees exactly the rows inserted by then, so a later slice end saw every event an earlier
-- one saw and its answer wins, also between two job processes running at once.
CREATE TABLE IF NOT EXISTS achievementsEarned
(
    userId      Int64,
    badge       LowCardinality(String),
    tier        UInt32,
    earned      UInt8,
    earnedAt    DateTime64(3, 'UTC'),
    eventId     UUID,
    version     DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (userId, badge, tier);

-- achievementsAnnounced: the durable memory of the announcements: every (user, badge, tier) ever put on the stream,
-- with the stream entry's id and what it said. A tier in here is never announced again, whatever happens to it
-- later. `recordedAt` (the engine's clock, at the first insert of the key; duplicates from a repeated insert keep
-- the key's minimum meaningful) tells the job when the Redis registry of the same announcement may be pruned.
CREATE TABLE IF NOT EXISTS achievementsAnnounced
(
    userId      Int64,
    badge       LowCardinality(String),
    tier        UInt32,
    earnedAt    DateTime64(3, 'UTC'),
    eventId     UUID,
    streamId    String,
    recordedAt  DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (userId, badge, tier);

-- achievementsProgress: where each user's replay of each badge ended, so that the next run goes on from there with
-- the new events only: the last event replayed (`lastAt`, `lastEid`), the running value after it and the running
-- maximum, as of the rows inserted by `seenUntil` (the computing run's slice end, also the `version`). Badge '' is the
-- user's own row: when the user was last computed.
CREATE TABLE IF NOT EXISTS achievementsProgress
(
    userId      Int64,
    badge       LowCardinality(String),
    lastAt      DateTime64(3, 'UTC'),
    lastEid     String,
    running     Int64,
    peak        Int64,
    seenUntil   DateTime64(3, 'UTC'),
    version     DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (userId, badge);
