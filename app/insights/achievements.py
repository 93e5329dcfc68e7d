"""Achievements: tiered badges, kept by ``award_achievements`` and announced once on ``achievements:earned``.

A badge follows one metric: ``followers`` (followerCount), ``reactions`` (reactionCount), ``downloads``
(downloadCount) and ``uploads`` (uploadCount); its tiers are 1, 10, 100, 1,000, 10,000 and 100,000. A tier is earned
by the event that first lifts the metric's running value to it, replaying the user's events in
``(createdAt, eventId)`` order; it stays earned when the value falls again. The job keeps every user's tiers in
``achievementsEarned`` (sql/0012), which this module reads.

The announcement (``announce``): one script, in the stream's slot, that appends a tier to the stream only if the
registry hash ``{achievements:earned}:announced`` does not name it yet, and names it there in the same step. Two
job processes racing, a job retried after a crash between its steps, a replay re-inserting old events: whoever comes
second finds the tier named and appends nothing. The hash holds the last hours only; the job records every
announcement in ClickHouse (``achievementsAnnounced``) and never offers a tier recorded there again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core import constants as c
from app.core.events import as_utc
from app.stores.redis_store import RedisClient, run_script
from app.stores.runtime import Runtime

BADGES = ("downloads", "followers", "reactions", "uploads")
TIERS = (1, 10, 100, 1_000, 10_000, 100_000)
EARNED_TABLE = "achievementsEarned"
EARNED_COLUMNS = ["userId", "badge", "tier", "earned", "earnedAt", "eventId", "version"]
ANNOUNCED_TABLE = "achievementsAnnounced"
ANNOUNCED_COLUMNS = ["userId", "badge", "tier", "earnedAt", "eventId", "streamId"]

# A user's tiers as the newest row of each says (the job writes a row per change, ``earned`` = 0 for a tier taken
# back).
READ_SQL = """
SELECT badge, tier, argMax(earnedAt, version), argMax(eventId, version), argMax(earned, version) AS e
FROM achievementsEarned
WHERE userId = {user:Int64}
GROUP BY badge, tier
HAVING e = 1
ORDER BY badge, tier
"""


@dataclass(frozen=True)
class Tier:
    """One earned tier: the user, the badge, the tier, and the event that first reached it."""

    user_id: int
    badge: str
    tier: int
    earned_at: datetime
    event_id: str

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.user_id, self.badge, self.tier)

    def to_json(self) -> dict[str, Any]:
        return {"badge": self.badge, "tier": self.tier, "earnedAt": iso(self.earned_at), "eventId": self.event_id}


def iso(at: datetime) -> str:
    """An instant as the answers and the stream spell it: ISO 8601 in UTC, milliseconds."""
    return as_utc(at).isoformat(timespec="milliseconds")


def read_achievements(rt: Runtime, user_id: int) -> dict[str, Any]:
    """``insights achievements USER``: the tiers the user has earned, as of the last run, by (badge, tier)."""
    rows = rt.clickhouse.rows(READ_SQL, {"user": user_id})
    earned = [Tier(user_id, str(b), int(t), at, str(e)).to_json() for b, t, at, e, _ in rows]
    return {"userId": user_id, "earned": earned}


# KEYS: the registry hash, the stream. ARGV: the stream's length cap, the two TTLs, then five values per tier (userId,
# badge, tier, earnedAt, eventId). Returns, per tier, the id of its stream entry and 1 if this call appended it (0: the
# registry named it already).
ANNOUNCE_SCRIPT = """
local added = 0
local out = {}
for i = 4, #ARGV, 5 do
  local field = ARGV[i] .. ':' .. ARGV[i + 1] .. ':' .. ARGV[i + 2]
  local id = redis.call('HGET', KEYS[1], field)
  local new = 0
  if not id then
    new = 1
    id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'userId', ARGV[i], 'badge', ARGV[i + 1],
                    'tier', ARGV[i + 2], 'earnedAt', ARGV[i + 3], 'eventId', ARGV[i + 4])
    redis.call('HSET', KEYS[1], field, id)
    added = added + 1
  end
  out[#out + 1] = id
  out[#out + 1] = new
end
if added > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return out
"""


def registry_field(key: tuple[int, str, int]) -> str:
    user_id, badge, tier = key
    return f"{user_id}:{badge}:{tier}"


def parse_field(field: str) -> tuple[int, str, int] | None:
    parts = field.split(":")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
        return None
    return (int(parts[0]), parts[1], int(parts[2]))


def announce(r: RedisClient, tiers: Sequence[Tier], maxlen: int) -> list[tuple[str, bool]]:
    """Put each tier on the stream unless the registry names it already (one atomic script call); returns each
    tier's stream entry id (new or earlier) and whether this call appended it."""
    if not tiers:
        return []
    args: list[Any] = [maxlen, c.ACHIEVEMENTS_REGISTRY_TTL_S, c.ACHIEVEMENTS_STREAM_TTL_S]
    for t in tiers:
        args += [t.user_id, t.badge, t.tier, iso(t.earned_at), t.event_id]
    keys = [c.ACHIEVEMENTS_REGISTRY_KEY, c.ACHIEVEMENTS_STREAM_KEY]
    (reply,) = run_script(r, ANNOUNCE_SCRIPT, [(keys, args)])
    return [(str(reply[i]), bool(int(reply[i + 1]))) for i in range(0, len(reply), 2)]
