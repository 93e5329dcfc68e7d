"""``snapshot_user_metrics``: the beat job that keeps the three derived tables readers use on a miss, in one run
and under one lock, since all three follow the same changelog: the metrics snapshot
(``app.jobs.metrics_snapshot``), the hourly timeline (``app.jobs.timeline``) and the reactions snapshot
(``app.jobs.reactions_snapshot``)."""

from __future__ import annotations

from dataclasses import replace

from app.derived.job_state import JobReport
from app.jobs.metrics_snapshot import snapshot_metrics
from app.jobs.reactions_snapshot import snapshot_reactions
from app.jobs.timeline import update_timeline
from app.stores.runtime import Runtime


def snapshot_user_metrics(rt: Runtime, full: bool | None = None) -> JobReport:
    """The metrics snapshot, then the timeline, then the reactions snapshot; ``full`` forces full runs."""
    snap = snapshot_metrics(rt, full)
    line = update_timeline(rt, full)
    reactions = snapshot_reactions(rt, full)
    return replace(
        snap,
        mode=f"{snap.mode}; timeline {line.mode}; reactions {reactions.mode}",
        seconds=snap.seconds + line.seconds + reactions.seconds,
    )
