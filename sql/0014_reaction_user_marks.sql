-- Each user's latest reaction arrival, in row (-userId, 0) of the reactions snapshot: a reader serves the user's set
-- row (userId, 0), every image of the user's in one value (app/jobs/reactions_snapshot.py), only while this mark is
-- not later than the position of the sentinel row, as it does for a (user, image) state row and its mark (sql/0011).
-- Image ids are positive, so (-userId, 0) is no image's mark.
CREATE MATERIALIZED VIEW IF NOT EXISTS reactionUserMarksMv TO reactionSnapshot AS
SELECT -userId AS userId, toInt64(0) AS imageId, toUInt8(0) AS flags, CAST([], 'Array(String)') AS versions,
       max(insertedAt) AS computedAt
FROM entityMetricEvents
WHERE metricType IN ('ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry') AND entityType = 'Image'
GROUP BY userId;
