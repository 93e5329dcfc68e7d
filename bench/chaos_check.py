"""The end of ``bench chaos``: the stack's log, computed metrics and caches against the oracle over every event the
broker acknowledged (``bench/oracle.py``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.caches import metrics_cache
from app.caches.reactions_cache import flags_key
from app.core import constants as c
from app.derived.metrics_from_log import compute_user_metrics
from app.jobs.registry import run_now
from app.jobs.run import job_lock_key
from app.stores.runtime import Runtime
from app.write import deadletters
from bench.oracle import Oracle, events_of


@dataclass
class Comparison:
    lost_values: int = 0
    doubled_values: int = 0
    wrong_computed: int = 0
    wrong_cached: int = 0
    cached_users: int = 0
    wrong_reactions: int = 0
    cached_reactions: int = 0
    examples: list[str] = field(default_factory=list)

    def differs(self, what: str, got: Any, want: float) -> bool:
        if got == want:
            return False
        if len(self.examples) < 15:
            self.examples.append(f"{what}={got}, oracle {want}")
        return True


def _compare_metrics(rt: Runtime, users: list[int], expected: dict[int, dict[str, Any]], out: Comparison) -> None:
    for i in range(0, len(users), 1000):
        chunk = users[i : i + 1000]
        computed = compute_user_metrics(rt.clickhouse, chunk, weights=rt.weights, window=rt.window)
        cached = metrics_cache.read(rt.redis, chunk)
        for u in chunk:
            want = {name: float(v) for name, v in expected.get(u, {}).items()}
            for name, value in computed[u].to_json().items():
                target = want.get(name, 0.0)
                if name != "rank" and out.differs(f"user {u} computed {name}", value, target):
                    out.wrong_computed += 1
                    if name != "engagementScore":
                        out.lost_values += max(0, int(target - float(value or 0)))
                        out.doubled_values += max(0, int(float(value or 0) - target))
            hit = cached[u]
            if hit is None:
                continue
            out.cached_users += 1
            for name, value in hit.to_json().items():
                if name != "rank" and out.differs(f"user {u} cached {name}", value, want.get(name, 0.0)):
                    out.wrong_cached += 1


def _compare_reactions(rt: Runtime, users: list[int], oracle: Oracle, out: Comparison) -> None:
    for u in users:
        for image, flags in rt.redis.hgetall(flags_key(u)).items():
            out.cached_reactions += 1
            if out.differs(f"user {u} image {int(image)} cached", int(flags), oracle.reactions(u, int(image))):
                out.wrong_reactions += 1


def final_engagement(rt: Runtime) -> None:
    """One engagement run after the last event (the cached scores are the job's), the way beat runs it: under the
    job's lock. Beat and the maintenance worker are stopped by now, so a lock still held is a killed run's and is
    broken first; a run outside the lock beside the stack's own would double the changed keys' deltas."""
    rt.redis.delete(job_lock_key(c.RECOMPUTE_ENGAGEMENT))
    report = run_now(rt, c.RECOMPUTE_ENGAGEMENT)
    if "skipped" in report:
        raise RuntimeError(f"the final engagement run did not run: {report}")


def verify(rt: Runtime, acked: list[dict[str, Any]], users_simulated: int) -> dict[str, Any]:
    """Every acknowledged event in the log once, and every number the stack serves, against the oracle."""
    final_engagement(rt)
    oracle = Oracle(now=datetime.now(UTC))
    events = events_of(acked)
    oracle.apply_all(events)
    expected = oracle.all_metrics()
    users = sorted((set(expected) | set(range(1, users_simulated + 1))) - {0})
    out = Comparison()
    _compare_metrics(rt, users, expected, out)
    _compare_reactions(rt, users, oracle, out)
    present = {r[0] for r in rt.clickhouse.rows("SELECT DISTINCT toString(eventId) FROM entityMetricEvents")}
    doubled_rows = rt.clickhouse.rows(
        "SELECT count() FROM (SELECT eventId FROM entityMetricEvents FINAL GROUP BY eventId HAVING count() > 1)"
    )[0][0]
    letters = deadletters.list_letters(rt.redis, limit=100_000)
    acked_ids = {e.event_id for e in events}
    return {
        "events_acknowledged": len(acked_ids),
        "messages_acknowledged": len(acked),
        "events_lost": len(acked_ids - present),
        "lost_event_ids": sorted(acked_ids - present)[:50],
        "events_stored_twice": int(doubled_rows),
        "metric_values_lost": out.lost_values,
        "metric_values_counted_twice": out.doubled_values,
        "wrong_computed_values": out.wrong_computed,
        "wrong_cached_values": out.wrong_cached,
        "wrong_cached_reactions": out.wrong_reactions,
        "cached_users_checked": out.cached_users,
        "cached_reactions_checked": out.cached_reactions,
        "dead_letters": len(letters),
        "dead_letter_reasons": dict(Counter(f"{d.task}: {d.reason[:100]}" for d in letters).most_common(10)),
        "examples": out.examples,
    }


def attribute_losses(
    report: dict[str, Any], acked: list[dict[str, Any]], faults: list[Any], started: float
) -> list[dict[str, Any]]:
    """For each lost event (at most 50): its message, when the broker acknowledged it (seconds into the run) and
    the faults under way from 15 s before that to 5 s after, the suspects of its loss."""
    lost = set(report.get("lost_event_ids", []))
    out = []
    for message in acked:
        ids = {e.event_id for e in events_of([message])}
        if not ids & lost:
            continue
        at = float(message.get("_acked", started)) - started
        near = [
            f"{f.kind} {f.started - started:.1f}-{f.ended - started:.1f} s"
            for f in faults
            if f.started - started <= at + 5 and f.ended - started >= at - 15
        ]
        out.append({"task": message["type"], "acked_s": round(at, 1), "events": len(ids & lost), "faults_near": near})
    return out


def failures(report: dict[str, Any]) -> list[str]:
    """What makes a soak fail: anything lost, counted twice or served wrong."""
    keys = (
        "events_lost",
        "events_stored_twice",
        "metric_values_lost",
        "metric_values_counted_twice",
        "wrong_computed_values",
        "wrong_cached_values",
        "wrong_cached_reactions",
    )
    return [f"{k}={report[k]}" for k in keys if report[k]]
