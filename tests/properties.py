"""How many examples a property test draws: its own figure, times ``PROPERTY_EXAMPLES_SCALE`` (default 1).

The properties' logic is the same in every shape; what a shape changes is the stores under it. CI runs the suite
three times (embedded, a server, a cluster): the first pass draws every test's full count, the later two a share
of it (``.ci/run`` sets 0.5), each with examples of its own (hypothesis seeds every run afresh).
"""

from __future__ import annotations

import os

SCALE = float(os.environ.get("PROPERTY_EXAMPLES_SCALE", "1"))
FLOOR = 5  # a property never draws fewer, whatever the scale


def examples(n: int) -> int:
    """``n`` examples scaled by ``PROPERTY_EXAMPLES_SCALE``, at least ``FLOOR`` (or ``n`` when it is smaller)."""
    return max(min(n, FLOOR), round(n * SCALE))
