"""The one typed settings object.

Every process reads its configuration here, once, and passes the object down; no other module reads
``os.environ``. Variable names are a contract: deployment files and the README use them.
Unset service URLs mean *embedded mode*: an in-process ClickHouse (chdb) and a private ``redis-server`` under
``DATA_DIR``.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core import constants as c

DEFAULT_DATA_DIR = Path(".data")
ReadSource = Literal["clickhouse", "postgres", "dual"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    data_dir: Path = Field(default=DEFAULT_DATA_DIR, alias="DATA_DIR")
    clickhouse_url: str | None = Field(default=None, alias="CLICKHOUSE_URL")
    clickhouse_database: str = Field(default="usermetrics", alias="CLICKHOUSE_DATABASE")
    # Cluster mode: the cluster's name in the servers' ``remote_servers``; CLICKHOUSE_URL then lists the nodes,
    # comma-separated. Replication: "keeper" (Replicated* tables coordinated by ZooKeeper or Keeper; the cluster
    # has internal_replication=true) or "distributed" (plain tables; the Distributed engine writes every replica
    # of a shard itself, internal_replication=false).
    clickhouse_cluster: str | None = Field(default=None, alias="CLICKHOUSE_CLUSTER")
    clickhouse_replication: Literal["keeper", "distributed"] = Field(default="keeper", alias="CLICKHOUSE_REPLICATION")
    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    celery_broker_url: str | None = Field(default=None, alias="CELERY_BROKER_URL")
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    flower_basic_auth: SecretStr | None = Field(default=None, alias="FLOWER_BASIC_AUTH")
    flower_port: int = Field(default=5555, alias="FLOWER_PORT")
    env: Literal["dev", "prod"] = Field(default="dev", alias="APP_ENV")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")

    # Worker and write path.
    worker_concurrency: int = Field(default=4, ge=1, alias="WORKER_CONCURRENCY")
    # Embedded stack only: pool processes of the events-only worker beside the engine's owner (0: none).
    ingest_processes: int = Field(default=2, ge=0, le=64, alias="INGEST_PROCESSES")
    flush_max_wait_ms: int = Field(default=250, ge=1, le=5000, alias="FLUSH_MAX_WAIT_MS")
    flush_linger_ms: int = Field(default=100, ge=0, le=1000, alias="FLUSH_LINGER_MS")
    flush_max_events: int = Field(default=5000, ge=1, alias="FLUSH_MAX_EVENTS")
    flush_max_deliveries: int = Field(default=30, ge=1, alias="FLUSH_MAX_DELIVERIES")
    task_events: bool = Field(default=True, alias="TASK_EVENTS")
    # The per-message event tasks: three task events each (broker publishes) would cost much of a worker's throughput,
    # so only this share of their messages sends them (decided per message from its task id).
    event_task_events_sample: float = Field(default=0.01, ge=0, le=1, alias="EVENT_TASK_EVENTS_SAMPLE")
    # Deprecated, read only while EVENT_TASK_EVENTS_SAMPLE is unset: true was every message, false none.
    event_task_events: bool | None = Field(default=None, alias="EVENT_TASK_EVENTS")
    # Test only: failpoints (app/core/failpoints.py) a test in another process may hold, comma-separated.
    failpoints: str = Field(default="", alias="FAILPOINTS")
    worker_prefetch: int = Field(default=8, ge=1, alias="WORKER_PREFETCH")
    broker_visibility_timeout_s: int = Field(default=3600, ge=1, alias="BROKER_VISIBILITY_TIMEOUT_S")
    task_max_retries: int = Field(default=8, ge=0, alias="TASK_MAX_RETRIES")
    retry_backoff_max_s: int = Field(default=120, ge=1, alias="RETRY_BACKOFF_MAX_S")
    read_timeout_s: float = Field(default=10.0, gt=0, alias="READ_TIMEOUT_S")
    clickhouse_timeout_s: float = Field(default=10.0, gt=0, alias="CLICKHOUSE_TIMEOUT_S")
    redis_timeout_s: float = Field(default=2.0, gt=0, alias="REDIS_TIMEOUT_S")
    # The embedded Redis's AOF fsync policy: ``always`` (the default) loses no answered write when it is killed;
    # ``everysec`` is about 2.5 times faster per write and can lose its last second, event buffer included.
    embedded_redis_appendfsync: Literal["always", "everysec"] = Field(
        default="always", alias="EMBEDDED_REDIS_APPENDFSYNC"
    )

    # Read path. Where each feature reads from: ClickHouse (with the caches in front), the
    # legacy PostgreSQL, or both (serve PostgreSQL, compare with ClickHouse in the background).
    user_metrics_read_source: ReadSource = Field(default="clickhouse", alias="USER_METRICS_READ_SOURCE")
    reactions_read_source: ReadSource = Field(default="clickhouse", alias="REACTIONS_READ_SOURCE")
    # A user's first reactions miss caches every image the user reacted to (a complete set: then every page is a
    # hit), for users with at most this many; 0 turns complete sets off (pages are filled image by image).
    reactions_complete_max_images: int = Field(
        default=1000, ge=0, le=c.REACTIONS_COMPLETE_LIMIT, alias="REACTIONS_COMPLETE_MAX_IMAGES"
    )
    # A reader that finds another one already filling a user's cache waits this long for it before querying.
    cache_fill_wait_s: float = Field(default=2.0, ge=0, alias="CACHE_FILL_WAIT_S")
    # How long the last known metrics of a user are kept to be served (marked stale) while ClickHouse is down.
    stale_copy_ttl_s: int = Field(default=7 * 86_400, ge=0, alias="STALE_COPY_TTL_S")

    # Engagement (docs/architecture.md, "The metrics"): weights per metric type, "*" for any other; window in days.
    engagement_weights: dict[str, Decimal] = Field(
        default_factory=lambda: {
            "Download": Decimal(1),
            "Generation": Decimal(2),
            "ReactionHeart": Decimal("0.5"),
            "Comment": Decimal("1.5"),
            "*": Decimal("0.1"),
        },
        alias="ENGAGEMENT_WEIGHTS",
    )
    engagement_window_days: int = Field(default=30, ge=1, le=3650, alias="ENGAGEMENT_WINDOW_DAYS")

    # Beat jobs: intervals in seconds, bounds per run.
    engagement_interval_s: float = Field(default=60.0, gt=0, alias="ENGAGEMENT_INTERVAL_S")
    engagement_full_every: int = Field(default=30, ge=1, alias="ENGAGEMENT_FULL_EVERY")
    ranks_interval_s: float = Field(default=60.0, gt=0, alias="RANKS_INTERVAL_S")
    refresh_interval_s: float = Field(default=60.0, gt=0, alias="REFRESH_INTERVAL_S")
    refresh_ahead_s: float = Field(default=300.0, gt=0, alias="REFRESH_AHEAD_S")
    refresh_max_users: int = Field(default=5000, ge=1, alias="REFRESH_MAX_USERS")
    reconcile_interval_s: float = Field(default=300.0, gt=0, alias="RECONCILE_INTERVAL_S")
    reconcile_sample: int = Field(default=1000, ge=0, alias="RECONCILE_SAMPLE")
    snapshot_interval_s: float = Field(default=30.0, gt=0, alias="SNAPSHOT_INTERVAL_S")
    # How far ahead a snapshot row lists its score's drops (each user with something counting is recomputed once
    # per horizon).
    snapshot_horizon_s: float = Field(default=21_600.0, gt=0, alias="SNAPSHOT_HORIZON_S")
    # Creator insights: the peers snapshot and the achievements job (each within one run of an event).
    peers_interval_s: float = Field(default=600.0, gt=0, alias="PEERS_INTERVAL_S")
    achievements_interval_s: float = Field(default=60.0, gt=0, alias="ACHIEVEMENTS_INTERVAL_S")
    achievements_stream_maxlen: int = Field(default=100_000, ge=100, alias="ACHIEVEMENTS_STREAM_MAXLEN")
    job_time_limit_s: int = Field(default=600, ge=5, alias="JOB_TIME_LIMIT_S")
    metrics_port: int = Field(default=9808, ge=0, alias="METRICS_PORT")
    # Where the worker's Prometheus endpoint listens: loopback unless opened on purpose (e.g. 0.0.0.0 in a
    # container scraped from outside).
    metrics_address: str = Field(default="127.0.0.1", min_length=1, alias="METRICS_ADDRESS")

    # Beat intervals (seconds).
    buffer_check_interval_s: float = Field(default=30.0, gt=0, alias="BUFFER_CHECK_INTERVAL_S")
    buffer_lag_warn_s: float = Field(default=5.0, gt=0, alias="BUFFER_LAG_WARN_S")
    reclaim_idle_ms: int = Field(default=60_000, ge=1000, alias="RECLAIM_IDLE_MS")

    @field_validator(
        "clickhouse_url", "clickhouse_cluster", "redis_url", "celery_broker_url", "database_url", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _cluster_cache_needs_a_broker(self) -> Settings:
        if (self.redis_url or "").split("://", 1)[0].endswith("+cluster") and self.celery_broker_url is None:
            raise ValueError(
                "REDIS_URL names a Redis Cluster: set CELERY_BROKER_URL too (RabbitMQ, or a separate Redis; "
                "Celery has no Redis Cluster transport)"
            )
        return self

    @model_validator(mode="after")
    def _cluster_needs_servers(self) -> Settings:
        urls = self.clickhouse_urls
        if self.clickhouse_cluster is None and len(urls) > 1:
            raise ValueError("CLICKHOUSE_URL lists several servers: set CLICKHOUSE_CLUSTER to the cluster's name")
        if self.clickhouse_cluster is not None:
            if self.clickhouse_url is None or any(u.startswith("chdb:") for u in urls):
                raise ValueError("CLICKHOUSE_CLUSTER needs CLICKHOUSE_URL to list the cluster's servers (http://...)")
            if not all(c.isalnum() or c in "_-" for c in self.clickhouse_cluster):
                raise ValueError(f"invalid CLICKHOUSE_CLUSTER {self.clickhouse_cluster!r}")
            if len({self._db_of(u) for u in urls}) != 1:
                raise ValueError("every server in CLICKHOUSE_URL must name the same database")
        return self

    @property
    def event_task_events_share(self) -> float:
        """The share of the event tasks' messages that send task events: ``EVENT_TASK_EVENTS_SAMPLE``, or the
        deprecated ``EVENT_TASK_EVENTS`` (true: 1, false: 0) when only that one is set."""
        if self.event_task_events is not None and "event_task_events_sample" not in self.model_fields_set:
            return 1.0 if self.event_task_events else 0.0
        return self.event_task_events_sample

    @cached_property
    def data_path(self) -> Path:
        return self.data_dir.resolve()

    @property
    def clickhouse_urls(self) -> list[str]:
        """Every server of CLICKHOUSE_URL (one, or a cluster's nodes), else the embedded engine's DSN."""
        if self.clickhouse_url is None:
            return [f"chdb://{self.data_path / 'clickhouse'}"]
        return [u.strip() for u in self.clickhouse_url.split(",") if u.strip()]

    @property
    def clickhouse_dsn(self) -> str:
        """The first server (cluster mode: the node tried first)."""
        return self.clickhouse_urls[0]

    def _db_of(self, url: str) -> str:
        return urlsplit(url).path.strip("/") or self.clickhouse_database

    @property
    def clickhouse_db(self) -> str:
        """The database this deployment uses: the one named in a server URL's path, else ``CLICKHOUSE_DATABASE``
        (two deployments pointed at two databases of one server never share data)."""
        if self.clickhouse_embedded:
            return self.clickhouse_database
        return self._db_of(self.clickhouse_dsn)

    @property
    def clickhouse_server_dsn(self) -> str:
        """The server URL without its database path: the client connects before the database exists."""
        return self.clickhouse_server_dsns[0]

    @property
    def clickhouse_server_dsns(self) -> list[str]:
        """Every server's URL without its database path."""
        return [urlunsplit((p.scheme, p.netloc, "", p.query, "")) for p in map(urlsplit, self.clickhouse_urls)]

    @property
    def clickhouse_embedded(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb:")

    @property
    def chdb_path(self) -> Path | None:
        """Directory of the in-process engine, or None in server mode."""
        if not self.clickhouse_embedded:
            return None
        return Path(self.clickhouse_dsn.removeprefix("chdb://")).resolve()

    @property
    def redis_embedded(self) -> bool:
        return self.redis_url is None

    @property
    def legacy_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'legacy.sqlite3'}"

    def require_flower_auth(self) -> str | None:
        """Flower's ``user:password``; refuses to run without one outside dev mode."""
        if self.flower_basic_auth is not None:
            return self.flower_basic_auth.get_secret_value()
        if self.env != "dev":
            raise ValueError("FLOWER_BASIC_AUTH (user:password) is required when APP_ENV is not dev")
        return None


def load_settings() -> Settings:
    return Settings()
