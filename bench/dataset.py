"""A large synthetic event log for the read and job benchmarks, generated inside ClickHouse.

Rows are produced by ``INSERT ... SELECT`` over ``numbers()`` in chunks (so the materialized views build the
aggregate tables exactly as live inserts do), with a progress bar. The dataset is described by a row in
``benchDatasets``; a later run with the same parameters reuses it instead of generating it again.

Shape (Zipf-like popularity: ``pow(N, rand)`` is log-uniform, i.e. P(k) ~ 1/k):
- 5% uploads (images, some models and posts), owners skewed by popularity;
- 15% follows (target users by popularity), 55% reactions on images (images by popularity), 15% downloads,
  10% generations; about 15% of state events switch a key off; 1% of rows are exact redeliveries;
- timestamps spread over the ``days`` before generation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.core.events import as_utc
from app.core.settings import Settings
from app.stores.clickhouse import ClickHouse

CHUNK_ROWS = 1_000_000

_REGISTRY_DDL = """
CREATE TABLE IF NOT EXISTS benchDatasets
(name String, events UInt64, users UInt64, images UInt64, days UInt32, generatedAt DateTime64(3, 'UTC'))
ENGINE = ReplacingMergeTree(generatedAt) ORDER BY name
"""

# One chunk of rows [start, start + count). Every value is a bound parameter; ``n`` is the global row number.
CHUNK_SQL = """
INSERT INTO entityMetricEvents (eventId, entityType, entityId, userId, ownerId, metricType, metricValue, createdAt)
SELECT
    if(dup, generateUUIDv4(n - 1), generateUUIDv4(n)) AS eventId,
    multiIf(kind = 0, upType, kind = 1, 'User', kind IN (2, 3), 'Image', 'Model') AS entityType,
    multiIf(kind = 0, upEntity, kind = 1, target, kind = 2, image, kind = 3, image, model) AS entityId,
    multiIf(kind = 0, upOwner, actor) AS userId,
    multiIf(kind = 0, upOwner, kind = 1, target, kind IN (2, 3), imageOwner, modelOwner) AS ownerId,
    multiIf(kind = 0, 'Upload', kind = 1, 'Follow', kind = 2,
            arrayElement(['ReactionLike', 'ReactionHeart', 'ReactionLaugh', 'ReactionCry'], 1 + (h % 4)),
            kind = 3, 'Download', 'Generation') AS metricType,
    multiIf(kind IN (3, 4), 1, kind = 0 AND (h % 50) = 0, 0, kind IN (1, 2) AND (h % 7) = 0, 0, 1) AS metricValue,
    {start_at:DateTime64(3, 'UTC')} + toIntervalMillisecond(toInt64((h % 1000003) / 1000003 * {span_ms:Int64}))
        AS createdAt
FROM (
    SELECT
        number AS n,
        cityHash64(n, 'h') AS h,
        (cityHash64(n, 'd') % 100) = 0 AND n > 0 AS dup,
        multiIf((h2 % 100) < 5, 0, (h2 % 100) < 20, 1, (h2 % 100) < 75, 2, (h2 % 100) < 90, 3, 4) AS kind,
        cityHash64(n, 'k') AS h2,
        toInt64(pow({users:Int64}, (cityHash64(n, 'a') % 1000000) / 1000000)) AS actor,
        toInt64(pow({users:Int64}, (cityHash64(n, 't') % 1000000) / 1000000)) AS target,
        toInt64(pow({images:Int64}, (cityHash64(n, 'i') % 1000000) / 1000000)) AS image,
        toInt64(pow({users:Int64}, (cityHash64(image, 'o') % 1000000) / 1000000)) AS imageOwner,
        toInt64(1 + cityHash64(n, 'm') % 20000) AS model,
        toInt64(pow({users:Int64}, (cityHash64(model, 'mo') % 1000000) / 1000000)) AS modelOwner,
        toInt64(1 + cityHash64(n, 'u') % {images:Int64}) AS upEntity,
        arrayElement(['Image', 'Image', 'Image', 'Image', 'Image', 'Image', 'Post', 'Model'],
                     1 + cityHash64(n, 'ut') % 8) AS upType,
        toInt64(pow({users:Int64}, (cityHash64(upEntity, 'o') % 1000000) / 1000000)) AS upOwner
    FROM numbers({start:UInt64}, {count:UInt64})
)
"""


@dataclass(frozen=True)
class DatasetSpec:
    events: int
    users: int
    days: int = 400

    @property
    def images(self) -> int:
        return max(1000, self.events // 5)

    @property
    def name(self) -> str:
        return f"events{self.events}-users{self.users}-days{self.days}"


def existing(ch: ClickHouse, spec: DatasetSpec) -> datetime | None:
    """When this dataset was generated in this database, or None."""
    ch.command(_REGISTRY_DDL)
    rows = ch.rows(
        "SELECT max(generatedAt), count() FROM benchDatasets FINAL WHERE name = {name:String}", {"name": spec.name}
    )
    if not rows or not rows[0][1]:
        return None
    at: datetime = rows[0][0]
    return as_utc(at)


def generate(ch: ClickHouse, spec: DatasetSpec, progress: Callable[[int], None] | None = None) -> datetime:
    """Fill the (empty) event log with ``spec``; returns the generation instant (the newest timestamp)."""
    ch.command(_REGISTRY_DDL)
    now = datetime.now(UTC).replace(microsecond=0)
    start_at = now - timedelta(days=spec.days)
    base = {
        "users": spec.users,
        "images": spec.images,
        "start_at": start_at,
        "span_ms": spec.days * 86_400_000,
    }
    done = 0
    while done < spec.events:
        count = min(CHUNK_ROWS, spec.events - done)
        ch.command(CHUNK_SQL, {**base, "start": done, "count": count})
        done += count
        if progress:
            progress(count)
    ch.insert(
        "benchDatasets",
        [(spec.name, spec.events, spec.users, spec.images, spec.days, now)],
        ["name", "events", "users", "images", "days", "generatedAt"],
    )
    return now


BULK_TIMEOUT_S = 600.0


def location(settings: Settings, name: str, server: str | None = None) -> Settings:
    """Where a benchmark dataset lives: an embedded engine under ``$DATA_DIR/bench/<name>``, or with ``server``
    (``http://host:port``) a database of its own on that server. Either keeps the dataset for the next run."""
    if server is None:
        url = f"chdb://{settings.data_path / 'bench' / name}"
    else:
        url = f"{server.rstrip('/')}/usermetrics_bench_{name.replace('-', '_')}"
    # Generating and merging millions of rows takes statements far longer than a request's timeout.
    timeout = max(settings.clickhouse_timeout_s, BULK_TIMEOUT_S)
    return settings.model_copy(update={"clickhouse_url": url, "clickhouse_timeout_s": timeout})
