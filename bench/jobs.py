"""``python -m app bench jobs``: the beat jobs on the generated event logs (1 and 10 million events).

Per dataset (generated once and reused, as for ``bench read``): a full ``recompute_engagement`` and
``recompute_ranks``, an incremental engagement run after 10,000 new events, and ``reconcile_caches`` over
10,000 cached users. Baseline: the engagement of every user computed the naive way, argMax over the whole raw log
(``compute_user_metrics`` as of now for all users, in batches). ``--quick``: 100,000 and 300,000 events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from app.caches import metrics_cache
from app.core.settings import Settings
from app.derived.changelog import INFLIGHT_MARGIN
from app.derived.job_state import now as clock
from app.derived.metrics_from_log import compute_user_metrics
from app.jobs.engagement import recompute_engagement
from app.jobs.ranks import recompute_ranks
from app.jobs.reconcile import reconcile_caches
from app.stores import clickhouse
from app.stores.runtime import Runtime
from bench.dataset import CHUNK_SQL, DatasetSpec, location
from bench.harness import private_runtime
from bench.read import prepare, settle

GOAL_FULL_S = 5.0
GOAL_INCREMENTAL_S = 0.5
NEW_EVENTS = 10_000
RECONCILE_USERS = 10_000


@dataclass
class JobsResult:
    figures: dict[str, float] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str, str]]:
        f = self.figures
        out = []
        for n in self.sizes:
            k = f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"
            full = f[f"{k}_engagement_full_s"] + f[f"{k}_ranks_s"]
            out += [
                (
                    f"{k}: full engagement + ranks",
                    f"{f[f'{k}_engagement_full_s']:.2f} s + {f[f'{k}_ranks_s']:.2f} s = {full:.2f} s",
                    f"goal < {GOAL_FULL_S:.0f} s",
                ),
                (
                    f"{k}: incremental after {NEW_EVENTS:,} events",
                    f"{f[f'{k}_engagement_incremental_s']:.2f} s ({f[f'{k}_incremental_users']:,.0f} users)",
                    f"goal < {GOAL_INCREMENTAL_S} s",
                ),
                (
                    f"{k}: reconcile {RECONCILE_USERS:,} users",
                    f"{f[f'{k}_reconcile_s']:.2f} s",
                    f"drift {f[f'{k}_drift']:.4f}",
                ),
                (
                    f"{k}: naive engagement, all users",
                    f"{f[f'{k}_naive_s']:.2f} s",
                    f"full run {f[f'{k}_naive_s'] / f[f'{k}_engagement_full_s']:.1f}x faster",
                ),
            ]
        if len(self.sizes) == 2:
            a, b = (f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k" for n in self.sizes)
            growth = f[f"{b}_engagement_full_s"] / f[f"{a}_engagement_full_s"]
            out.append(
                (
                    f"growth {a} -> {b} events",
                    f"full engagement x{growth:.1f}",
                    f"events x{self.sizes[1] / self.sizes[0]:.0f}",
                )
            )
        return out


def run(quick: bool, settings: Settings, server: str | None = None) -> JobsResult:
    """On the embedded engine, or with ``server`` (``http://host:port``) on a ClickHouse server."""
    specs = (
        [DatasetSpec(events=100_000, users=2_000), DatasetSpec(events=300_000, users=5_000)]
        if quick
        else [DatasetSpec(events=1_000_000, users=10_000), DatasetSpec(events=10_000_000, users=100_000)]
    )
    result = JobsResult(sizes=[s.events for s in specs])
    for spec in specs:
        name = (
            "events-quick"
            if spec.events == 300_000
            else ("events" if spec.events == 10_000_000 else f"events-{spec.events}")
        )
        s = location(settings, name, server)
        ch = clickhouse.connect(s)
        prepare(ch, spec)
        settle(ch)
        with private_runtime(s, ch, "jobs") as rt:
            _measure(rt, spec, result.figures)
        ch.close()
    return result


def _measure(rt: Runtime, spec: DatasetSpec, f: dict[str, float]) -> None:
    k = f"{spec.events // 1_000_000}M" if spec.events >= 1_000_000 else f"{spec.events // 1000}k"
    rt.clickhouse.command("TRUNCATE TABLE engagementCurrent")
    # An incremental run looks back INFLIGHT_MARGIN past its predecessor for inserts still landing; a dataset
    # generated a moment ago would fall inside it. Let it age out, as it would on a live site.
    time.sleep(INFLIGHT_MARGIN.total_seconds())
    f[f"{k}_engagement_full_s"] = recompute_engagement(rt, full=True).seconds
    f[f"{k}_ranks_s"] = recompute_ranks(rt).seconds
    # 10,000 new events (beyond the generated ones), then an incremental run.
    rt.clickhouse.command(
        CHUNK_SQL,
        {
            "users": spec.users,
            "images": spec.images,
            "start_at": clock(rt).replace(microsecond=0),
            "span_ms": 1000,
            "start": spec.events + int(time.time()) % 1_000_000 * NEW_EVENTS,
            "count": NEW_EVENTS,
        },
    )
    report = recompute_engagement(rt, full=False)
    f[f"{k}_engagement_incremental_s"], f[f"{k}_incremental_users"] = report.seconds, report.users
    # Reconcile: 10,000 users cached and recently read, one in a hundred corrupted.
    users = list(range(1, min(RECONCILE_USERS, spec.users) + 1))
    for i in range(0, len(users), 2000):
        chunk = users[i : i + 2000]
        computed = compute_user_metrics(rt.clickhouse, chunk, weights=rt.weights, window=rt.window)
        metrics_cache.write(rt.redis, 1, computed)
        metrics_cache.read_noting(rt.redis, chunk, time.time())
    for u in users[::100]:
        rt.redis.hincrby(metrics_cache.metrics_key(u), "followerCount", 1)
    report = reconcile_caches(rt, sample=len(users))
    f[f"{k}_reconcile_s"], f[f"{k}_drift"] = report.seconds, report.drift_ratio
    # Baseline: every user's engagement from the raw log (argMax over all events), in batches of 2,000.
    started = time.perf_counter()
    for i in range(1, spec.users + 1, 2000):
        batch = list(range(i, min(i + 2000, spec.users + 1)))
        compute_user_metrics(rt.clickhouse, batch, weights=rt.weights, window=rt.window, as_of=clock(rt))
    f[f"{k}_naive_s"] = time.perf_counter() - started
