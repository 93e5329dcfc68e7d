"""The one range of ids: every user, image or entity id is a positive ClickHouse ``Int64``.

Producer payloads, services, read tasks and the command line all check ids here, so that an id outside the range
is refused with the same clear reason everywhere instead of wrapping around in ClickHouse (2**64 + 913 would read
as 913) or crashing a query.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import SupportsIndex, cast

from app.core.errors import ValidationError

MIN_ID = 1
MAX_ID = 2**63 - 1
ID_RANGE = f"integers from {MIN_ID} to 2**63-1 ({MAX_ID})"


def _show(value: object) -> str:
    """A short, always printable form of a rejected value (a huge integer has no affordable decimal form)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"<a {value.bit_length()}-bit integer>"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def check_id(value: SupportsIndex, what: str = "id") -> int:
    """``value`` as an int if it is an id in range; else ``ValidationError`` naming it and the range."""
    number: int | None = None
    if not isinstance(value, bool):
        try:
            number = operator.index(value)
        except TypeError:
            number = None
    if number is None or not MIN_ID <= number <= MAX_ID:
        raise ValidationError(f"{what} {_show(value)} is out of range: ids are {ID_RANGE}")
    return number


def check_ids(values: Iterable[SupportsIndex], what: str = "id") -> list[int]:
    """Every value checked with :func:`check_id` (order and duplicates kept); fails on the first bad one."""
    ids = list(values)
    if all(type(v) is int and MIN_ID <= v <= MAX_ID for v in ids):
        return cast(list[int], ids)  # the common case, checked in one pass
    return [check_id(v, what) for v in ids]
