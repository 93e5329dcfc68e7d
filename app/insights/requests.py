"""An insight request, checked once: the same rules for the CLI, the Python service and the read task.

Bad input (a range over ``MAX_RANGE_DAYS`` days, an end before the start, an unknown time zone, an id out of range,
a week or day count out of bounds) is a ``ValidationError`` naming the problem; an unknown user is not bad input
(it answers zeros). ``as_of`` defaults to the instant the request is made, fixed here so that the answer is exact for
one instant wherever it is computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from app.core.errors import ValidationError
from app.core.ids import check_id

Kind = Literal["growth", "retention", "audience", "activity", "peers", "achievements"]
KINDS: tuple[Kind, ...] = ("growth", "retention", "audience", "activity", "peers", "achievements")
MAX_RANGE_DAYS = 400
MAX_WEEKS = 104
MAX_ACTIVITY_DAYS = 400
# ClickHouse's own date range (``Date``): days outside it cannot be answered.
FIRST_DAY = date(1970, 1, 2)
LAST_DAY = date(2149, 6, 5)


def check_zone(name: str) -> str:
    """``name`` if it is an IANA time zone (``UTC``, ``Europe/Berlin``); else ``ValidationError``."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        raise ValidationError(f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Berlin")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValidationError(f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Berlin") from exc
    if name != "UTC" and name not in _zones():
        raise ValidationError(f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Berlin")
    return name


_ZONES: set[str] = set()


def _zones() -> set[str]:
    if not _ZONES:
        _ZONES.update(available_timezones())
    return _ZONES


@dataclass(frozen=True)
class InsightRequest:
    kind: Kind
    user_id: int
    as_of: datetime
    tz: str = "UTC"
    start: date | None = None
    end: date | None = None
    weeks: int = 12
    days: int = 28

    @classmethod
    def of(
        cls,
        kind: str,
        user_id: int,
        *,
        start: date | None = None,
        end: date | None = None,
        tz: str = "UTC",
        as_of: datetime | None = None,
        weeks: int = 12,
        days: int = 28,
    ) -> InsightRequest:
        """A checked request (``ValidationError`` on bad input)."""
        if kind not in KINDS:
            raise ValidationError(f"unknown insight {kind!r}: one of {', '.join(KINDS)}")
        user = check_id(user_id, "user id")
        at = datetime.now(UTC) if as_of is None else as_of
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        at = at.astimezone(UTC)
        if kind in ("growth", "audience"):
            if start is None or end is None:
                raise ValidationError(f"{kind} needs --from and --to days")
            if end < start:
                raise ValidationError(f"--to {end} is before --from {start}")
            if (end - start).days + 1 > MAX_RANGE_DAYS:
                raise ValidationError(
                    f"the range {start} to {end} is {(end - start).days + 1} days: at most {MAX_RANGE_DAYS}"
                )
            if start < FIRST_DAY or end > LAST_DAY:
                raise ValidationError(f"days must be between {FIRST_DAY} and {LAST_DAY}")
        if kind == "retention" and not (isinstance(weeks, int) and 1 <= weeks <= MAX_WEEKS):
            raise ValidationError(f"--weeks {weeks!r}: from 1 to {MAX_WEEKS}")
        if kind == "activity" and not (isinstance(days, int) and 1 <= days <= MAX_ACTIVITY_DAYS):
            raise ValidationError(f"--days {days!r}: from 1 to {MAX_ACTIVITY_DAYS}")
        if not datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=800) <= at <= datetime(2149, 1, 1, tzinfo=UTC):
            raise ValidationError(f"--as-of {at.isoformat()} is out of range")
        return cls(kind, user, at, check_zone(tz), start, end, weeks, days)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "user_id": self.user_id,
            "as_of": self.as_of.isoformat(),
            "tz": self.tz,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "weeks": self.weeks,
            "days": self.days,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InsightRequest:
        """A request sent by another process, checked again (a read task trusts no message)."""
        try:
            return cls.of(
                str(data["kind"]),
                data["user_id"],
                start=date.fromisoformat(data["start"]) if data.get("start") else None,
                end=date.fromisoformat(data["end"]) if data.get("end") else None,
                tz=str(data.get("tz", "UTC")),
                as_of=datetime.fromisoformat(data["as_of"]),
                weeks=int(data.get("weeks", 12)),
                days=int(data.get("days", 28)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ValidationError):
                raise
            raise ValidationError(f"not an insight request: {exc!r}"[:200]) from exc
