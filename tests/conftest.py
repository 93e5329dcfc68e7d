"""Test levels, by directory: ``tests/unit`` (no services; seconds), ``tests/integration`` (real Redis and
ClickHouse in this process, an in-process Celery worker), ``tests/e2e`` (the stack as processes). Each test gets its
level as a marker too: ``pytest -m unit``, ``-m "not e2e"``."""

from __future__ import annotations

from pathlib import Path

import pytest

LEVELS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        level = Path(str(item.fspath)).parent.name
        if level in LEVELS:
            item.add_marker(getattr(pytest.mark, level))
