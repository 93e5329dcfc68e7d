"""Fixtures of the e2e tests: the real services of ``tests.stack`` (``tests/stack_plugin.py``)."""

from tests.stack_plugin import pytest_configure  # noqa: F401 - registers tests.stack once for the session
