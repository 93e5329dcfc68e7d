"""Failpoints: named places where a test can hold a step to force an interleaving (never sleeps that happen to
line up). Production code calls ``hit(name)``; with nothing armed that is one dictionary lookup.

In the test's own process a failpoint runs an action (``armed``). In another process (a worker started by the test)
the test-only setting ``FAILPOINTS`` names the failpoints that process lets a test hold through Redis
(``enable_remote``): while ``failpoint:{name}:armed`` exists, a hit sets ``failpoint:{name}:held`` and waits until
the test deletes the armed key (at most ``REMOTE_HOLD_MAX_S``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

REMOTE_HOLD_MAX_S = 60.0

_armed: dict[str, Callable[[], None]] = {}

# Between a cache fill's ClickHouse query and its write of ``user:metrics`` hashes.
METRICS_FILL_BEFORE_WRITE = "metrics.fill.before_write"
# The metrics refresher, after writing the hashes of the dirty users it took and before clearing their marks.
REFRESH_BEFORE_CLEAR = "refresh.before_clear"
# An incremental engagement run, after it collected its changed keys and before it reads their rows.
ENGAGEMENT_MID_RUN = "engagement.mid_run"
# An incremental timeline run, after it computed its rows and before its one insert.
TIMELINE_BEFORE_INSERT = "timeline.before_insert"
# The achievements job, after it checked which of a group's earned tiers ClickHouse records as announced and before
# it announces the others; and after announcing them, before it records them in ClickHouse.
ACHIEVEMENTS_BEFORE_ANNOUNCE = "achievements.before_announce"
ACHIEVEMENTS_BEFORE_RECORD = "achievements.before_record"
# The flusher, once its batch's checks are done and before its insert.
FLUSH_BEFORE_INSERT = "flush.before_insert"
# A beat job inside its lock, before it starts working.
JOB_RUNNING = "job.running"
# A backfill's engine path, once it has loaded its image owners and before its first chunk.
BACKFILL_OWNERS_LOADED = "backfill.owners_loaded"


def hit(name: str) -> None:
    action = _armed.get(name)
    if action is not None:
        action()


@contextlib.contextmanager
def armed(name: str, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` (in the thread that reaches it) each time ``name`` is hit, for the duration of the block."""
    _armed[name] = action
    try:
        yield
    finally:
        _armed.pop(name, None)


def remote_key(name: str, part: str) -> str:
    """``failpoint:{name}:armed`` (set by the test) or ``failpoint:{name}:held`` (set by the process it holds)."""
    return f"failpoint:{name}:{part}"


def enable_remote(names: Iterable[str], redis: Callable[[], Any]) -> None:
    """Let a test in another process hold each of ``names`` through Redis (test-only setting ``FAILPOINTS``)."""

    def hold_while_armed(name: str) -> Callable[[], None]:
        def action() -> None:
            r = redis()
            if not r.exists(remote_key(name, "armed")):
                return
            r.set(remote_key(name, "held"), str(time.time()), ex=int(REMOTE_HOLD_MAX_S) * 2)
            deadline = time.monotonic() + REMOTE_HOLD_MAX_S
            while r.exists(remote_key(name, "armed")) and time.monotonic() < deadline:
                time.sleep(0.02)

        return action

    for name in names:
        _armed[name] = hold_while_armed(name)
