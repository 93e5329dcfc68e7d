"""The peers snapshot: creators' metric values and their distribution, kept by ``recompute_peers``."""

from __future__ import annotations

from typing import Any

from app.stores.runtime import Runtime


def read_peers(rt: Runtime, user_id: int) -> dict[str, Any]:
    """``insights peers USER``: the user's values and percentiles among creators, as of the last run."""
    raise NotImplementedError
