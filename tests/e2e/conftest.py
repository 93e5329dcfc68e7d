"""Fixtures of the e2e tests: the real services of ``tests.stack`` (imported here, so started here)."""

from tests.stack import celery_app, clean, producer, rt, run_cli, settings, worker  # noqa: F401 - fixtures
