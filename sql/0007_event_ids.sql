-- The event id registry: what each event id first said. An event id is an idempotency key, so a later message
-- with the same id must say the same thing; the flusher looks a batch's ids up here and dead-letters events that
-- reuse an id with a different payload ("first wins"), so that no table ever holds two meanings of one id.
--
-- The fingerprint is halfMD5 of the event's identity (everything but ownerId, which the flusher may fill in later
-- for an orphan event) and is computed the same way in Python (app/write/event_ids.py). Redeliveries with the
-- same fingerprint are written again as before (every table is idempotent in eventId); ReplacingMergeTree keeps
-- the highest version, which is the earliest insert.
CREATE TABLE IF NOT EXISTS eventIds
(
    eventId      UUID,
    fingerprint  UInt64,
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY eventId;

CREATE MATERIALIZED VIEW IF NOT EXISTS eventIdsMv TO eventIds AS
SELECT
    eventId,
    halfMD5(concat(entityType, '|', toString(entityId), '|', toString(userId), '|', metricType, '|',
                   toString(metricValue), '|', toString(toUnixTimestamp64Milli(createdAt)))) AS fingerprint,
    18446744073709551615 - toUInt64(toUnixTimestamp64Milli(insertedAt)) AS version
FROM entityMetricEvents;

INSERT INTO eventIds
SELECT
    eventId,
    argMin(halfMD5(concat(entityType, '|', toString(entityId), '|', toString(userId), '|', metricType, '|',
                          toString(metricValue), '|', toString(toUnixTimestamp64Milli(createdAt)))), insertedAt),
    18446744073709551615 - toUInt64(min(toUnixTimestamp64Milli(insertedAt)))
FROM entityMetricEvents
GROUP BY eventId;
