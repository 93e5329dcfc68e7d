-- Secondary orderings of the event log, kept by ClickHouse itself:
-- by actor (followingCount, upload counts, a user's reactions on a page of images) and by owner
-- (followerCount, reactions received, downloads, engagement). Without them those reads scan the whole log.
ALTER TABLE entityMetricEvents
    ADD PROJECTION IF NOT EXISTS byActor (SELECT * ORDER BY userId, metricType, entityType, entityId, createdAt);
ALTER TABLE entityMetricEvents
    ADD PROJECTION IF NOT EXISTS byOwner (SELECT * ORDER BY ownerId, metricType, createdAt);
