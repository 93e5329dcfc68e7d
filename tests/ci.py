"""Tests that need a tool ``.ci/run`` installs (promtool, Prometheus, Chromium, docker-compose) skip locally without
it, with their reason, and fail in CI, where skipping would hide that the check never ran."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = bool(os.environ.get("CI") or os.environ.get("USERMETRICS_CI"))


def missing_tool(reason: str) -> NoReturn:
    """Skip with ``reason`` here; fail with it in CI."""
    if IN_CI:
        pytest.fail(f"{reason}: .ci/run installs it, and CI must run this test")
    pytest.skip(reason)
