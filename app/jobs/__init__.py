"""The periodic jobs, one module each (import a job from its module; this package re-exports nothing).

Each job is a plain function of the runtime returning a ``JobReport``; ``tasks/maintenance.py`` wraps them in
Celery tasks that hold a lock (no overlap, whatever the number of beats) and a per-interval slot (two beats
publishing the same tick run it once), through ``app.jobs.run``.

- ``engagement.recompute_engagement``: the 30-day engagement score of every user with activity in the window, as
  the sum of per-key contributions (``engagementContrib``, sql/0006), full or incremental on the changelog.
- ``ranks.recompute_ranks``: the leaderboard built under a temporary key and swapped in with ``RENAME`` (readers
  see the old board or the new one, never a part), then ``rank`` in cached hashes.
- ``rewarm.refresh_expiring_caches``: users read in the last hour whose hash expires soon (or expired) are
  recomputed, at most ``REFRESH_MAX_USERS`` per run; their reaction hashes get their TTL renewed.
- ``reconcile.reconcile_caches``: cached hashes of recently changed users and a random sample of recently read ones
  are compared with ClickHouse and repaired; the drift ratio is logged and counted.
- ``derived_tables.snapshot_user_metrics``: the three derived tables readers use on a miss
  (``metrics_snapshot``, ``timeline``, ``reactions_snapshot``), each kept on the changelog.
- ``buffer_check.check_event_buffer``: the event buffer's and the broker's backlog, logged and counted.
"""
