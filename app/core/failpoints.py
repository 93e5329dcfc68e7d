"""Failpoints: named places where a test can hold a step to force an interleaving (never sleeps that happen to
line up). Production code calls ``hit(name)``; with nothing armed that is one dictionary lookup."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

_armed: dict[str, Callable[[], None]] = {}

# Between a cache fill's ClickHouse query and its write of ``user:metrics`` hashes.
METRICS_FILL_BEFORE_WRITE = "metrics.fill.before_write"
# The metrics refresher, after writing the hashes of the dirty users it took and before clearing their marks.
REFRESH_BEFORE_CLEAR = "refresh.before_clear"
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
