"""The web app of ``bench seeds``: a separate process reading the page mix through the real read services, as a web
app does, and timing every page read.

It opens the caches and ClickHouse as a web app's process would: in the server shape, the ClickHouse server; in the
embedded shape the engine belongs to the worker, so misses go through its read tasks (``app.read.sources``). Every
call of a source is a miss and is counted; so is every statement any SQLAlchemy engine of this process sends (the
legacy database: none should be).

``python -m bench.seeds_client`` reads ``{"env": {settings}, "mix": {MixSpec}}`` on stdin and prints the pages'
kinds, milliseconds, misses and lookups as JSON.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, event

from app.caches.reactions_cache import BitUpdate, ReactionSet
from app.core.metrics import UserMetrics
from app.core.settings import Settings
from app.read.metrics_service import UserMetricsQueryService
from app.read.reactions_service import FILLS, UserReactionQueryService
from app.read.sources import complete_reaction_source, metrics_source, reaction_source
from app.stores.runtime import Runtime
from bench.page_mix import MixSpec, Page, measured, page_mix


class Counts:
    def __init__(self) -> None:
        self.source_calls = 0
        self.missed_ids = 0
        self.complete_calls = 0  # misses that read a user's complete set
        self.sql_statements = 0

    def on_statement(self, *_: Any) -> None:
        self.sql_statements += 1


def readers(rt: Runtime, counts: Counts) -> tuple[UserMetricsQueryService, UserReactionQueryService]:
    """The read services on the configured sources, each call of a source counted as a miss."""
    metrics, reactions, every = metrics_source(rt), reaction_source(rt), complete_reaction_source(rt)

    def metrics_miss(user_ids: Sequence[int], as_of: datetime | None = None) -> dict[int, UserMetrics]:
        counts.source_calls += 1
        counts.missed_ids += len(user_ids)
        return metrics(user_ids, as_of)

    def reactions_miss(user_id: int, image_ids: Sequence[int]) -> dict[int, list[BitUpdate]]:
        counts.source_calls += 1  # the page's missed images are counted from its answer
        return reactions(user_id, image_ids)

    def complete_miss(user_id: int) -> ReactionSet | None:
        counts.source_calls += 1
        counts.complete_calls += 1
        assert every is not None
        return every(user_id)

    return UserMetricsQueryService(rt, source=metrics_miss), UserReactionQueryService(
        rt.redis, reactions_miss, complete=complete_miss if every is not None else None
    )


def read_pages(payload: dict[str, Any]) -> dict[str, Any]:
    spec = MixSpec.from_json(payload["mix"])
    rt = Runtime(Settings(**payload["env"]))
    counts = Counts()
    event.listen(Engine, "before_cursor_execute", counts.on_statement)  # any legacy database this process opens
    metrics, reactions = readers(rt, counts)

    def read(page: Page) -> None:
        if page.kind == "metrics":
            metrics.get_user_metrics(page.ids)
        else:
            counts.missed_ids += reactions.get_user_reactions(page.user, page.ids).missed

    pages = page_mix(spec)
    for page in pages[: spec.warmup]:
        read(page)
    FILLS.drain()  # the warm-up's fills are in the cache before anything is timed
    gc.collect()
    counts.sql_statements = 0
    out: dict[str, list[Any]] = {"kind": [], "ms": [], "missed": [], "lookups": [], "missed_ids": []}
    for page in measured(spec, pages):
        calls, ids = counts.source_calls, counts.missed_ids
        started = time.perf_counter()
        read(page)
        out["ms"].append((time.perf_counter() - started) * 1000)
        out["kind"].append(page.kind)
        out["missed"].append(counts.source_calls > calls)
        out["lookups"].append(len(page.ids))
        out["missed_ids"].append(counts.missed_ids - ids)
    FILLS.drain()
    return {**out, "sql_statements": counts.sql_statements, "complete_reads": counts.complete_calls}


if __name__ == "__main__":
    print(json.dumps(read_pages(json.loads(sys.stdin.read()))))
