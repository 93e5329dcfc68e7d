"""Achievements: tiered badges, kept by ``award_achievements`` and announced once on ``achievements:earned``."""

from __future__ import annotations

from typing import Any

from app.stores.runtime import Runtime


def read_achievements(rt: Runtime, user_id: int) -> dict[str, Any]:
    """``insights achievements USER``: the tiers the user has earned, as of the last run."""
    raise NotImplementedError
