"""The periodic jobs: engagement, ranks, cache re-warming, reconciliation, the buffer check.

Each job is a plain function of the runtime returning a summary; ``tasks/maintenance.py`` wraps them in Celery
tasks that hold a lock (no overlap, whatever the number of beats) and a per-interval slot (two beats publishing
the same tick run it once).

- ``recompute_engagement``: the 30-day engagement score of every user with activity in the window, as the sum of
  per-key contributions (``engagementContrib``, sql/0006). A full run rebuilds them from the log's window; an
  incremental run merges only the rows that arrived since (``eventArrivals``) into the stored latest events of
  their keys, zeroes keys whose latest event left the window and moves each owner's score by the difference. Full
  every ``ENGAGEMENT_FULL_EVERY`` runs and whenever it must (first run, excluded users or weights changed, an
  interrupted run, arrivals expired). Scores live in ``engagementCurrent`` (a view copies every change into
  ``engagementTrend``) and go into cached hashes.
- ``recompute_ranks``: the leaderboard built under a temporary key and swapped in with ``RENAME`` (readers see the
  old board or the new one, never a part), then ``rank`` in cached hashes.
- ``refresh_expiring_caches``: users read in the last hour whose hash expires soon (or expired) are recomputed,
  at most ``REFRESH_MAX_USERS`` per run; their reaction hashes get their TTL renewed. Cold users expire.
- ``reconcile_caches``: cached hashes of recently changed users and a random sample of recently read ones are
  compared with ClickHouse and repaired; the drift ratio is logged and counted.
- ``snapshot_user_metrics``: every user's metrics as the read path computes them (``userMetricsSnapshot``), kept
  for the users changed since the last run, so that a cache miss reads one row per unchanged user; then the hourly
  timeline of every user's state counts (``metricTimeline``), so that a history request reads one row per hour;
  then every user's reaction flags per image (``reactionSnapshot``), so that a reactions miss is a multi-get.
- ``check_event_buffer``: the event buffer's and the broker's backlog, logged and counted.
"""

from app.jobs.buffer_check import check_event_buffer
from app.jobs.engagement import INFLIGHT_MARGIN, recompute_engagement
from app.jobs.ranks import ranked, recompute_ranks
from app.jobs.reaction_snapshot import snapshot_reactions
from app.jobs.reconcile import reconcile_caches
from app.jobs.report import JobReport
from app.jobs.rewarm import refresh_expiring_caches
from app.jobs.snapshot import snapshot_metrics, snapshot_user_metrics
from app.jobs.timeline import update_timeline

__all__ = [
    "INFLIGHT_MARGIN",
    "JobReport",
    "check_event_buffer",
    "ranked",
    "recompute_engagement",
    "recompute_ranks",
    "reconcile_caches",
    "refresh_expiring_caches",
    "snapshot_metrics",
    "snapshot_reactions",
    "snapshot_user_metrics",
    "update_timeline",
]
