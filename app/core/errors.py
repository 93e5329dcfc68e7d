"""Errors typed by what to do with them: retry (transient) or dead-letter (permanent).

Only the project's own error types live here, free of any store's client library, so that the web app's client
(``app.client``) can raise ``ValidationError`` without loading ClickHouse or Redis. Which errors of those libraries
are transient and which permanent is decided at the store boundary, in ``app.stores.errors``.
"""

from __future__ import annotations


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


class ClickHouseError(UserMetricsError):
    """Mixin carrying the ClickHouse error code and name (``None`` for client-side errors)."""

    code: int | None = None
    name: str | None = None


class ClickHouseUnavailable(ClickHouseError, TransientError):
    """ClickHouse cannot take the work now (down, restarting, out of disk or memory, too many parts, timeout)."""


class ClickHouseRejected(ClickHouseError, PermanentError):
    """ClickHouse refused this input (it cannot be parsed or converted); the same input will always fail."""
