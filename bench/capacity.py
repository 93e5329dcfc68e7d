"""``python -m app bench capacity``: what one event, one cached user and one user's reactions cost, measured here, and
the capacity plan those figures give for a large site.

- ClickHouse, on the read benchmark's event log (generated once and reused): compressed and uncompressed bytes of
  every table, the log's projections included, per event; and the insert rate of one engine (batches of 500 events,
  every materialized view included) into a scratch database, the rate one shard's replica must sustain.
- Redis, a private ``redis-server``: ``used_memory`` growth per user whose metrics were filled through the read path
  (the hash, its version key, its stale copy), and per image field of reactions filled through the reactions read
  path (flags, and the versions of the bits set).
- The plan: shards, replicas, Redis memory and nodes, worker processes for the site given as options, with the
  arithmetic printed. Worker throughput is ``bench ingest``'s (a figure of that benchmark, passed as an option).
"""

from __future__ import annotations

import math
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from app.core.events import Event, MetricType
from app.core.settings import Settings
from app.read.metrics_service import UserMetricsQueryService
from app.read.reactions_service import UserReactionQueryService, latest_reactions
from app.stores import clickhouse, migrations
from app.stores.clickhouse import insert_events
from app.stores.runtime import Runtime
from bench.dataset import DatasetSpec, location
from bench.harness import private_runtime
from bench.read import prepare, settle

CACHED_USERS = 10_000
REACTION_USERS = 1_000
PAGE = 100
INSERT_SECONDS = 15.0
BATCH = 500


@dataclass(frozen=True)
class Site:
    """The site to plan for, and the operating margins."""

    events_per_day: float = 50e6
    reactions: float = 2e9
    daily_readers: float = 1e6
    peak_factor: float = 5.0  # peak events/s over the daily mean
    headroom: float = 0.5  # run shards and workers at most half busy at peak
    retention_days: float = 730.0
    disk_per_replica_tb: float = 4.0  # usable disk of one ClickHouse node
    replicas: int = 2
    worker_events_per_s: float = 18_500.0  # bench ingest: one prefork worker, 500-event messages
    images_seen_per_reader: float = 300.0  # image fields a reader's cached reactions hash holds (7-day TTL)
    readers_per_week_factor: float = 3.0  # distinct readers in a week over daily readers
    redis_node_gb: float = 25.0  # memory one Redis master may use


@dataclass
class CapacityResult:
    figures: dict[str, float] = field(default_factory=dict)
    plan: list[tuple[str, str, str]] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str, str]]:
        f = self.figures
        return [
            (
                "ClickHouse bytes per event (all tables)",
                f"{f['bytes_per_event']:.1f} compressed, {f['raw_bytes_per_event']:.1f} uncompressed",
                f"the log alone: {f['log_bytes_per_event']:.1f} compressed; {f['events']:,.0f} events",
            ),
            (
                "ClickHouse inserts, one engine",
                f"{f['insert_events_per_s']:,.0f} events/s",
                f"batches of {BATCH}, every view included",
            ),
            (
                "Redis per cached user (metrics)",
                f"{f['redis_bytes_per_user']:.0f} bytes",
                "hash + version + stale copy",
            ),
            ("Redis per cached image field (reactions)", f"{f['redis_bytes_per_image']:.0f} bytes", "flags + versions"),
            *self.plan,
        ]


def run(quick: bool, settings: Settings, site: Site) -> CapacityResult:
    spec = DatasetSpec(events=300_000, users=5_000) if quick else DatasetSpec(events=10_000_000, users=100_000)
    bench_settings = location(settings, "events-quick" if quick else "events")
    ch = clickhouse.connect(bench_settings)
    result = CapacityResult()
    f = result.figures
    prepare(ch, spec)
    settle(ch)
    f["events"] = float(ch.rows("SELECT count() FROM entityMetricEvents")[0][0])
    compressed, raw, log = ch.rows(_SIZES_SQL)[0]
    f["bytes_per_event"] = float(compressed) / f["events"]
    f["raw_bytes_per_event"] = float(raw) / f["events"]
    f["log_bytes_per_event"] = float(log) / f["events"]
    with private_runtime(bench_settings, ch, "capacity") as rt:
        _redis_costs(rt, spec, f, quick)
    f["insert_events_per_s"] = _insert_rate(ch, quick)
    ch.close()
    result.plan = plan(f, site)
    return result


_SIZES_SQL = """
SELECT sum(data_compressed_bytes), sum(data_uncompressed_bytes),
       sumIf(data_compressed_bytes, table = 'entityMetricEvents')
FROM system.parts WHERE active AND database = currentDatabase()
"""


def _redis_costs(rt: Runtime, spec: DatasetSpec, f: dict[str, float], quick: bool) -> None:
    r = rt.redis
    rnd = random.Random(7)  # noqa: S311 - workload sampling
    users = rnd.sample(range(1, spec.users + 1), min(CACHED_USERS // (10 if quick else 1), spec.users))
    r.flushdb()
    before = int(r.info("memory")["used_memory"])
    service = UserMetricsQueryService(rt)
    for i in range(0, len(users), 500):
        service.get_user_metrics(users[i : i + 500])
    r.delete("metrics:recent-reads", "stats:counters")
    f["redis_bytes_per_user"] = (int(r.info("memory")["used_memory"]) - before) / len(users)
    r.flushdb()
    before = int(r.info("memory")["used_memory"])
    readers = rnd.sample(range(1, spec.users + 1), REACTION_USERS // (10 if quick else 1))
    reactions = UserReactionQueryService(r, lambda u, imgs: latest_reactions(rt.clickhouse, u, imgs), fills=None)
    for user in readers:  # pages as a reader sees them: some images reacted to, the rest not
        reacted = [int(i) for (i,) in rt.clickhouse.rows(_REACTED_SQL, {"user": user})]
        reactions.get_user_reactions(user, reacted + [rnd.randint(1, spec.images) for _ in range(PAGE - len(reacted))])
    f["redis_bytes_per_image"] = (int(r.info("memory")["used_memory"]) - before) / (len(readers) * PAGE)


_REACTED_SQL = """
SELECT DISTINCT entityId FROM stateByActor WHERE userId = {user:Int64} AND metricType = 'ReactionLike' LIMIT 20
"""


def _insert_rate(ch: clickhouse.ClickHouse, quick: bool) -> float:
    """Events per second the engine takes in batches, into a scratch database of its own (dropped afterwards)."""
    home = ch.client.database
    ch.command("CREATE DATABASE IF NOT EXISTS capacity_scratch")
    ch.client.database = "capacity_scratch"
    scratch = clickhouse.ClickHouse(ch.client, "capacity_scratch", embedded=ch.embedded)
    try:
        migrations.migrate(scratch)
        return insert_rate(scratch, INSERT_SECONDS / (5 if quick else 1))
    finally:
        ch.client.database = home
        ch.command("DROP DATABASE IF EXISTS capacity_scratch")


def insert_rate(ch: clickhouse.ClickHouse, seconds: float) -> float:
    """Events per second ``ch`` takes for ``seconds``, in batches of ``BATCH`` reactions (every view included)."""
    now = datetime.now(UTC)
    done, started = 0, time.perf_counter()
    rnd = random.Random(3)  # noqa: S311 - synthetic events
    while time.perf_counter() - started < seconds:
        batch = [
            Event(
                uuid.uuid4(),
                "Image",
                rnd.randint(1, 1_000_000),
                rnd.randint(1, 100_000),
                rnd.randint(1, 100_000),
                MetricType.REACTION_LIKE,
                1,
                now - timedelta(seconds=rnd.randint(0, 86_400)),
            )
            for _ in range(BATCH)
        ]
        insert_events(ch, batch)
        done += BATCH
    return done / (time.perf_counter() - started)


def plan(f: dict[str, float], site: Site) -> list[tuple[str, str, str]]:
    """The plan's rows: each figure with its arithmetic."""
    mean = site.events_per_day / 86_400
    peak = mean * site.peak_factor
    stored_tb = site.events_per_day * site.retention_days * f["bytes_per_event"] / 1e12
    shards_for_inserts = math.ceil(peak / (f["insert_events_per_s"] * site.headroom))
    shards_for_disk = math.ceil(stored_tb / (site.disk_per_replica_tb * site.headroom))
    shards = max(shards_for_inserts, shards_for_disk)
    cached_users = site.daily_readers  # a metrics hash lives an hour and is re-warmed while read
    metrics_gb = cached_users * f["redis_bytes_per_user"] / 1e9
    reaction_readers = site.daily_readers * site.readers_per_week_factor  # reactions hashes live 7 days
    reactions_gb = reaction_readers * site.images_seen_per_reader * f["redis_bytes_per_image"] / 1e9
    redis_gb = metrics_gb + reactions_gb
    masters = max(3, math.ceil(redis_gb / (site.redis_node_gb * site.headroom)))
    workers = max(2, math.ceil(peak / (site.worker_events_per_s * site.headroom)))
    return [
        (
            "plan: events",
            f"{mean:,.0f}/s mean, {peak:,.0f}/s peak",
            f"{site.events_per_day:,.0f}/day / 86,400 s, x{site.peak_factor:g} at peak",
        ),
        (
            "plan: ClickHouse disk",
            f"{stored_tb:,.1f} TB per replica",
            f"{site.events_per_day:,.0f} x {site.retention_days:g} days x {f['bytes_per_event']:.1f} B",
        ),
        (
            "plan: ClickHouse shards",
            f"{shards} shards x {site.replicas} replicas = {shards * site.replicas} nodes",
            f"inserts: {peak:,.0f} / ({f['insert_events_per_s']:,.0f} x {site.headroom:g}) -> {shards_for_inserts}; "
            f"disk: {stored_tb:,.1f} TB / ({site.disk_per_replica_tb:g} TB x {site.headroom:g}) -> {shards_for_disk}",
        ),
        (
            "plan: Redis memory",
            f"{redis_gb:,.1f} GB ({metrics_gb:,.2f} metrics + {reactions_gb:,.1f} reactions)",
            f"{cached_users:,.0f} users x {f['redis_bytes_per_user']:.0f} B + {reaction_readers:,.0f} readers x "
            f"{site.images_seen_per_reader:g} images x {f['redis_bytes_per_image']:.0f} B",
        ),
        (
            "plan: Redis Cluster",
            f"{masters} masters + {masters} replicas",
            f"{redis_gb:,.1f} GB / ({site.redis_node_gb:g} GB x {site.headroom:g}), at least 3",
        ),
        (
            "plan: worker processes",
            f"{workers} (prefork x4 each), plus 1 maintenance worker and 1 beat",
            f"{peak:,.0f} / ({site.worker_events_per_s:,.0f} x {site.headroom:g}) (bench ingest's batch rate), "
            "at least 2",
        ),
        (
            "plan: reactions in ClickHouse",
            f"{site.reactions * f['bytes_per_event'] / 1e9:,.0f} GB",
            f"{site.reactions:,.0f} reaction events x {f['bytes_per_event']:.1f} B (already within the disk figure "
            "if they are among the retained events)",
        ),
    ]
