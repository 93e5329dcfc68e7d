"""``snapshot_user_metrics``: the beat job that keeps the derived tables readers use, in one run and under one
lock, since all follow the same changelog: the metrics snapshot (``app.jobs.metrics_snapshot``), the hourly
timeline (``app.jobs.timeline``), the reactions snapshot (``app.jobs.reactions_snapshot``) and the insights'
histories (``app.jobs.insight_histories``)."""

from __future__ import annotations

from dataclasses import replace

from app.derived.job_state import JobReport
from app.jobs.insight_histories import update_insight_histories
from app.jobs.metrics_snapshot import snapshot_metrics
from app.jobs.reactions_snapshot import snapshot_reactions
from app.jobs.timeline import update_timeline
from app.stores.runtime import Runtime


def snapshot_user_metrics(rt: Runtime, full: bool | None = None) -> JobReport:
    """The metrics snapshot, the timeline, the reactions snapshot, the insights' histories; ``full`` forces full
    runs."""
    snap = snapshot_metrics(rt, full)
    line = update_timeline(rt, full)
    reactions = snapshot_reactions(rt, full)
    insights = update_insight_histories(rt, full)
    return replace(
        snap,
        mode=f"{snap.mode}; timeline {line.mode}; reactions {reactions.mode}; insights {insights.mode}",
        seconds=snap.seconds + line.seconds + reactions.seconds + insights.seconds,
    )
