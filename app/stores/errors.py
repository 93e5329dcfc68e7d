"""Store errors by what to do with them: which errors of the ClickHouse and Redis clients are transient (retry)
and which permanent (dead-letter), as the project's types of ``app.core.errors``.

Every ClickHouse error is translated at the store boundary (``app.stores.clickhouse``) into one of the two branches,
by its class and, for a server's ``DatabaseError``, by its ClickHouse error code: an error about the data of one
insert is permanent for that input only; capacity (disk, memory, parts), timeouts and availability (a restarting
server, a lost replica) are transient, and so is any code this module does not know: retrying a batch that could
have been written costs a delay, dead-lettering good data costs an operator's replay.
"""

from __future__ import annotations

import re
import struct

import redis
from clickhouse_connect.driver import exceptions as ch_exc

from app.core.errors import (
    ClickHouseError,
    ClickHouseRejected,
    ClickHouseUnavailable,
    PermanentError,
    TransientError,
    UserMetricsError,
)

# ClickHouse error codes that describe the data of one statement: permanent for that input only.
# (src/Common/ErrorCodes.cpp) Anything else from a server is treated as transient.
DATA_ERROR_CODES: frozenset[int] = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        32,  # ATTEMPT_TO_READ_AFTER_EOF
        33,  # CANNOT_READ_ALL_DATA
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        376,  # CANNOT_PARSE_UUID
        395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
        469,  # VIOLATED_CONSTRAINT
    }
)

_CODE_RE = re.compile(r"\bCode:\s*(\d+)")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")

# A Redis Cluster reconfiguring (a failover, slots moving) after the client's own retries: try again later.
_CLUSTER_CHANGING: tuple[type[BaseException], ...] = (
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
)

TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    TransientError,
    ch_exc.OperationalError,
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
    *_CLUSTER_CHANGING,
)

# A Redis call that failed because Redis could not be reached (as opposed to a wrong command).
REDIS_DOWN: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OSError, *_CLUSTER_CHANGING)

# Raised by the client while it serialises rows it was given: the rows are wrong, not the server.
_CLIENT_DATA_ERRORS: tuple[type[BaseException], ...] = (
    ch_exc.DataError,
    ch_exc.ProgrammingError,
    ValueError,
    TypeError,
    OverflowError,
    struct.error,
)


def clickhouse_code(exc: BaseException) -> tuple[int | None, str | None]:
    """The ClickHouse error code and name of ``exc`` (from the client's fields, else from the message)."""
    code = getattr(exc, "code", None)
    name = getattr(exc, "name", None)
    text = str(exc)
    if not isinstance(code, int):
        found = _CODE_RE.search(text)
        code = int(found.group(1)) if found else None
    if not isinstance(name, str):
        names = _NAME_RE.findall(text)
        name = names[-1] if names else None
    return code, name


def translate_clickhouse(exc: BaseException) -> ClickHouseError:
    """A ClickHouse client error as this project's typed error (raise it ``from exc``)."""
    code, name = clickhouse_code(exc)
    kind: type[ClickHouseError]
    if isinstance(exc, ch_exc.OperationalError | ch_exc.InterfaceError | OSError | TimeoutError):
        kind = ClickHouseUnavailable
    elif code is not None:
        kind = ClickHouseRejected if code in DATA_ERROR_CODES else ClickHouseUnavailable
    elif isinstance(exc, _CLIENT_DATA_ERRORS):
        kind = ClickHouseRejected
    else:
        kind = ClickHouseUnavailable
    label = f" [{name or code}]" if (name or code) else ""
    err = kind(f"{type(exc).__name__}{label}: {_first_line(str(exc))}")
    err.code, err.name = code, name
    return err


def _first_line(text: str, limit: int = 500) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit] + "..."


def classify(exc: BaseException) -> type[UserMetricsError]:
    """Map an error to what to do with it: ``TransientError`` (retry) or ``PermanentError`` (dead-letter)."""
    if isinstance(exc, TRANSIENT_EXCEPTIONS):
        return TransientError
    if isinstance(exc, PermanentError):
        return PermanentError
    if isinstance(exc, ch_exc.Error):
        return TransientError if isinstance(translate_clickhouse(exc), TransientError) else PermanentError
    return PermanentError
