-- One row per engagement run, written before the run stores anything. Its stamp is the version of every score
-- (engagementCurrent.computedAt) and contribution (engagementContrib.computedAt) the run writes, the column their
-- ReplacingMergeTree keeps the greatest of. A stamp is the job's clock, but never at or below an earlier stamp or
-- stored score: a clock that steps back cannot make an older score win. Kept 400 days (the newest row is what
-- counts; the rest is the runs' history for operators).
CREATE TABLE IF NOT EXISTS engagementRuns
(
    stamp     DateTime64(3, 'UTC'),
    clockAt   DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY stamp
TTL toDateTime(stamp) + INTERVAL 400 DAY;
