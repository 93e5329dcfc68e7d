"""Errors typed by what to do with them: retry (transient) or dead-letter (permanent)."""

from __future__ import annotations

import redis
from clickhouse_connect.driver import exceptions as ch_exc


class UserMetricsError(Exception):
    """Base of every error this project raises on purpose."""


class TransientError(UserMetricsError):
    """A store is unreachable or overloaded; the same work will succeed later. Retry with backoff."""


class PermanentError(UserMetricsError):
    """The input is wrong; retrying cannot help. Dead-letter it with the reason."""


class ValidationError(PermanentError, ValueError):
    """A producer passed bad arguments. Raised before anything is enqueued."""


class StoreBusyError(UserMetricsError):
    """The embedded ClickHouse data path is owned by another process."""


TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    TransientError,
    ch_exc.OperationalError,
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
)

# A Redis call that failed because Redis could not be reached (as opposed to a wrong command).
REDIS_DOWN: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)


def classify(exc: BaseException) -> type[UserMetricsError]:
    """Map a library error to what to do with it."""
    if isinstance(exc, TRANSIENT_EXCEPTIONS):
        return TransientError
    return PermanentError
