"""Names that other programs depend on: Redis keys, TTLs, queues, task names. Units are in the names."""

from __future__ import annotations

# Redis keys (a contract read by the web app; docs/architecture.md, "Redis keys").
USER_METRICS_KEY = "user:metrics:{user_id}"
USER_METRICS_TTL_S = 3600
# Companion of a metrics hash: the Redis time (microseconds) at which the ClickHouse snapshot behind the
# hash was taken. A write only lands when its snapshot is newer, so a slow writer never overwrites fresher
# numbers. Same TTL as the hash it guards.
USER_METRICS_VERSION_KEY = "user:metrics:v:{user_id}"
# The last metrics written for a user, kept longer than the hash itself, to be served (marked stale) when
# ClickHouse cannot be reached. TTL: STALE_COPY_TTL_S.
USER_METRICS_STALE_KEY = "user:metrics:last:{user_id}"
# Held by the one reader that fills a user's missing hash; other readers wait for its result (no stampede).
USER_METRICS_FILL_LOCK_KEY = "lock:fill:metrics:{user_id}"
REACTIONS_KEY = "reactions:{user_id}"
REACTIONS_TTL_S = 604_800
# Companion of a reactions hash: per ``{imageId}:{bit}``, the version of the event that set it; fields ``all`` (the
# set is complete) and ``drops`` (events it could not apply). Same TTL.
REACTIONS_VERSION_KEY = "reactions:v:{user_id}"
# The most images ``REACTIONS_COMPLETE_MAX_IMAGES`` may allow in a user's complete set of cached reactions.
REACTIONS_COMPLETE_LIMIT = 10_000
LEADERBOARD_KEY = "leaderboard:engagement"
# userId -> rank on the board, replaced together with it (a fill reads its users' ranks in one HMGET).
LEADERBOARD_RANKS_KEY = "leaderboard:engagement:ranks"
# Replaced whole by every rank run; the TTL only bounds a board nobody rebuilds any more.
LEADERBOARD_TTL_S = 7 * 86_400
# Users read recently (score: last read, epoch seconds): whose caches the refresh job keeps warm. 1 hour window.
RECENT_READS_KEY = "metrics:recent-reads"
RECENT_READS_TTL_S = 2 * 3600
# Creator insights kept by beat jobs (``app.insights``). Every newly earned badge tier is announced once, ever, on
# this stream (fields userId, badge, tier, earnedAt, eventId; capped at ACHIEVEMENTS_STREAM_MAXLEN entries, about),
# for the web app to notify the creator; renewed on every announcement.
ACHIEVEMENTS_STREAM_KEY = "achievements:earned"
ACHIEVEMENTS_STREAM_TTL_S = 90 * 86_400
# The announcements of the last hours ("userId:badge:tier" -> stream entry id), in the stream's slot (its name is the
# hash tag): one script checks it and appends to the stream atomically. ClickHouse keeps every announcement for good
# (``achievementsAnnounced``); the job prunes fields ClickHouse has held for ACHIEVEMENTS_REGISTRY_HOLD_S.
ACHIEVEMENTS_REGISTRY_KEY = "{achievements:earned}:announced"
ACHIEVEMENTS_REGISTRY_TTL_S = 7 * 86_400
ACHIEVEMENTS_REGISTRY_HOLD_S = 3600
# The peers snapshot: every key starts with this hash tag (one slot, so that one script reads a generation).
PEERS_KEY_PREFIX = "{peers}"
# Per-job state between runs (last run, incremental watermarks); a missing state means a full run.
JOB_STATE_KEY = "jobs:state:{job}"
JOB_STATE_TTL_S = 7 * 86_400
# One run per job per interval tick, whatever the number of beats publishing it.
JOB_SLOT_KEY = "jobs:slot:{job}:{slot}"

# The durable event buffer between event tasks and ClickHouse (a Redis stream with a consumer group).
EVENT_STREAM_KEY = "events:buffer"
EVENT_STREAM_GROUP = "flushers"
# Renewed on every append; only an idle buffer that nobody drained for this long could expire.
EVENT_STREAM_TTL_S = 30 * 86_400
# First receive time of an event whose producer gave no occurred_at, pinned so a redelivery keeps it. The worker
# keeps it for the broker's redelivery window (``app.write.ingest.pin_ttl_s``); this is the default of direct callers.
EVENT_TIME_PIN_KEY = "events:first-seen:{event_id}"
EVENT_TIME_PIN_TTL_S = 2 * 3600

DEAD_LETTER_KEY = "deadletters"
# Task name recorded on dead letters of already-validated events that the flusher could not write.
BUFFERED_EVENTS_TASK = "events:buffer"
DEAD_LETTER_TTL_S = 90 * 86_400
DEAD_LETTER_MAXLEN = 1_000_000
# A dead letter keeps at most this much of a message body (its head, full size and SHA-256 beyond).
DEAD_LETTER_MAX_BODY_BYTES = 64 * 1024
DEAD_LETTER_MAX_REASON_CHARS = 2000

# Users whose metrics changed and whose cached hash (if any) awaits a recompute; score = when marked (ms).
METRICS_DIRTY_KEY = "metrics:dirty"
METRICS_DIRTY_TTL_S = 86_400
LOCK_KEY = "lock:{name}"
COUNTER_KEY = "stats:counters"
COUNTER_TTL_S = 90 * 86_400

# Queues.
EVENTS_QUEUE = "events"
MAINTENANCE_QUEUE = "maintenance"
READS_QUEUE = "reads"

# Event task names (a contract for producers in any language; schemas/*.json).
RECORD_FOLLOW = "record_follow"
RECORD_UPLOAD = "record_upload"
SET_REACTION = "set_reaction"
RECORD_ENTITY_METRIC = "record_entity_metric"
RECORD_EVENTS = "record_events"
EVENT_TASKS = (RECORD_FOLLOW, RECORD_UPLOAD, SET_REACTION, RECORD_ENTITY_METRIC, RECORD_EVENTS)

# Read and maintenance task names.
QUERY_USER_METRICS = "query_user_metrics"
QUERY_REACTIONS = "query_reactions"
QUERY_ALL_REACTIONS = "query_all_reactions"
QUERY_HISTORY = "query_metric_history"
QUERY_INSIGHT = "query_insight"
RUN_JOB_NOW = "run_job_now"
MANAGE_EXCLUDED_USERS = "manage_excluded_users"
APPLY_MIGRATIONS = "apply_migrations"
# Tasks a process sends to the worker that owns the embedded engine, and waits for (the ``reads`` queue).
READ_TASKS = (
    QUERY_USER_METRICS,
    QUERY_REACTIONS,
    QUERY_ALL_REACTIONS,
    QUERY_HISTORY,
    QUERY_INSIGHT,
    MANAGE_EXCLUDED_USERS,
    APPLY_MIGRATIONS,
    RUN_JOB_NOW,
)
# The reads a caller asks over the read channel (``app.stores.read_channel``) when the owner serves it.
CHANNEL_READS = (QUERY_USER_METRICS, QUERY_REACTIONS, QUERY_ALL_REACTIONS, QUERY_HISTORY, QUERY_INSIGHT)
CHECK_EVENT_BUFFER = "check_event_buffer"
RECOMPUTE_ENGAGEMENT = "recompute_engagement"
RECOMPUTE_RANKS = "recompute_ranks"
REFRESH_EXPIRING_CACHES = "refresh_expiring_caches"
RECONCILE_CACHES = "reconcile_caches"
# How long the reconciler gives a mismatch it found to settle before it counts it as drift: the write path's own
# second (cache correct within a second of an acknowledged event), with a margin.
RECONCILE_SETTLE_S = 1.5
SNAPSHOT_USER_METRICS = "snapshot_user_metrics"
RECOMPUTE_PEERS = "recompute_peers"
AWARD_ACHIEVEMENTS = "award_achievements"
JOBS = (
    CHECK_EVENT_BUFFER,
    RECOMPUTE_ENGAGEMENT,
    RECOMPUTE_RANKS,
    REFRESH_EXPIRING_CACHES,
    RECONCILE_CACHES,
    SNAPSHOT_USER_METRICS,
    RECOMPUTE_PEERS,
    AWARD_ACHIEVEMENTS,
)
BENCH_NOOP = "bench_noop"
# The embedded engine's insert counters, read by the ingest benchmark through the worker that owns the engine.
BENCH_ENGINE_COUNTERS = "bench_engine_counters"

# The ClickHouse releases the code is tested with, as major.minor (docs/deployment.md, "Supported ClickHouse
# versions"). Servers: the local server of the server-mode and cluster test passes (``app.local.clickhouse_server``)
# runs this release, and the ClickHouse server and Keeper images of docker-compose.yml and
# docker-compose.cluster.yml are pinned to it. Embedded mode: the engine chdb bundles (its version is locked in
# uv.lock). Tests check all three against these.
CLICKHOUSE_SERVER_VERSION = "26.7"
CLICKHOUSE_EMBEDDED_VERSION = "26.9"
