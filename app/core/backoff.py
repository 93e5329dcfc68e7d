"""The retry delay of the write path's background loops (flusher, refresher): exponential, capped, jittered."""

from __future__ import annotations

import random


def jittered_delay(failures: int, base_s: float = 0.2, max_s: float = 30.0) -> float:
    """Seconds to wait after ``failures`` failures in a row: ``base_s * 2**failures`` up to ``max_s``, times a
    random factor in [0.5, 1) so that many workers do not retry in step."""
    delay: float = min(max_s, base_s * 2**failures) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security
    return delay
