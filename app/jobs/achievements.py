"""``award_achievements``: every user's badge tiers (``achievementsEarned``, sql/0012), and each newly earned tier
announced once, ever, on the stream ``achievements:earned`` (``app.insights.achievements``).

A user's tiers depend on the user's events only, so a run computes the users named as owners by the rows in its
changelog slice (``eventArrivals``, the slice rules of every changelog job), as of the rows inserted by the slice's
end. Each goes on from where its last replay ended (``achievementsProgress``: per badge the last event, the running
value and maximum) with the events after it, which are all in the slice; a user with a row in the slice that falls
at or before that point (a late event, a redelivery, a replayed dead letter, a backfill re-run) or never computed is
replayed whole (``achievements_sql``). A full run (first run, the excluded set changed, arrivals expired, forced, or
too many users in the slice) replays every user who may have earned something, in user order, resumable like the
snapshot jobs' full runs.

For each group of users a run (1) computes their tiers and progress (one statement per way), (2) writes the tiers
whose first reach changed, and, for users replayed whole, a row taking back each stored tier no longer earned (its
only makers were excluded since, or late events moved it), then the progress, all versioned by the slice's end,
(3) for the users' earned tiers ClickHouse does not record as announced, runs the announce script (atomic in Redis:
a tier named in the registry hash is never appended again), then (4) records them in ``achievementsAnnounced``. The
run's position is saved last, so a run that dies anywhere is redone by the next one; steps 1, 2 and 4 are
idempotent, step 3 appends nothing for a tier the registry names, and step 3 offers every earned tier of the group
that is not recorded, so a tier stored by a run that died before announcing it is announced by the next. Registry
fields ClickHouse has held for ``ACHIEVEMENTS_REGISTRY_HOLD_S`` are pruned (see ``prune``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.core import constants as c
from app.core import failpoints
from app.core.events import as_utc
from app.derived.changelog import EPOCH, ChangelogJob, FullRun, Slice, run_on_changelog, save_position
from app.derived.job_state import JobReport, load_state, save_state
from app.derived.job_state import now as clock
from app.derived.metrics_from_log import USERS_PER_QUERY
from app.insights.achievements import (
    ANNOUNCED_COLUMNS,
    ANNOUNCED_TABLE,
    BADGES,
    EARNED_COLUMNS,
    EARNED_TABLE,
    TIERS,
    Tier,
    announce,
    parse_field,
    registry_field,
)
from app.jobs import achievements_sql as q
from app.stores.runtime import Runtime

JOB = "achievements"  # its state: jobs:state:achievements
PROGRESS_TABLE = "achievementsProgress"
REPORT = "award_achievements"
# Past this many users in a slice (a backfill, a bulk import) a run goes full: a full run has a time budget and resumes.
INCREMENTAL_MAX_USERS = 20_000
ANNOUNCE_CHUNK = 500  # tiers per script call
PRUNE_SCAN = 1000  # registry fields per HSCAN step
PRUNE_MAX = 200_000  # registry fields looked at per pruning
PRUNE_EVERY_S = 600.0  # the registry is pruned at most this often (its fields wait an hour anyway)
# An announcement follows its registry check by at most this long, else the check is made again. A registry field is
# pruned only once ClickHouse has recorded its tier for ACHIEVEMENTS_REGISTRY_HOLD_S, which is longer than twice this:
# a run whose check did not see the record yet still finds the field (see ``prune``).
CHECK_VALID_S = c.ACHIEVEMENTS_REGISTRY_HOLD_S / 4


@dataclass
class Tally:
    users: int = 0
    replayed: int = 0  # of them, replayed whole
    changed: int = 0
    announced: int = 0


def award_achievements(rt: Runtime, full: bool | None = None) -> JobReport:
    """One run (see the module's text); ``full`` forces a full run."""
    return run_on_changelog(rt, Achievements(rt, bool(full)), full)


class Achievements(ChangelogJob):
    """The achievements job on the changelog."""

    name = JOB

    def __init__(self, rt: Runtime, forced: bool) -> None:
        self.now = clock(rt)
        self.state = load_state(rt.redis, JOB)
        self.forced = forced

    def stale(self, rt: Runtime, run: Slice) -> bool:
        # Excluding a user (or taking one back) changes the tiers of everyone that user acted on: recompute all.
        return self.state.get("ready") != "1" or self.state.get("excluded_set") != run.excluded_set

    def incremental(self, rt: Runtime, run: Slice) -> JobReport | None:
        params = {**run.params(), "types": q.ARRIVAL_TYPES}
        users = sorted(int(u) for (u,) in rt.clickhouse.rows(q.ARRIVED_USERS_SQL, params))
        if len(users) > INCREMENTAL_MAX_USERS:
            return None
        tally = Tally()
        for i in range(0, len(users), USERS_PER_QUERY):
            award(rt, users[i : i + USERS_PER_QUERY], tally, run.until, run.after)
        save_position(rt, JOB, run.next_after, self.now, **self.pruned(rt, run))
        mode = f"incremental ({tally.replayed} of {tally.users} users replayed whole)"
        return JobReport(REPORT, mode, users=tally.users, changed=tally.changed, announced=tally.announced)

    def pruned(self, rt: Runtime, run: Slice) -> dict[str, str]:
        """Prune the registry when the last pruning is ``PRUNE_EVERY_S`` old (it scans the hash); the state's field."""
        last = self.state.get("pruned_at")
        if last and run.engine_now - datetime.fromisoformat(last) < timedelta(seconds=PRUNE_EVERY_S):
            return {}
        prune(rt, run.engine_now)
        return {"pruned_at": run.engine_now.isoformat()}

    def full(self, rt: Runtime, run: Slice) -> JobReport:
        started = time.perf_counter()
        full = FullRun.begin(rt, self, run, resume=not self.forced, inputs={"excluded_set": run.excluded_set})
        params = {"after": full.cursor, "owner_types": q.OWNER_STATE_TYPES}
        users = [int(u) for (u,) in rt.clickhouse.rows(q.ALL_USERS_SQL, params)]
        tally = Tally()

        def steps() -> Iterator[tuple[int, int, bool]]:
            for i in range(0, len(users), USERS_PER_QUERY):
                batch = users[i : i + USERS_PER_QUERY]
                award(rt, batch, tally, full.until, None)
                yield batch[-1], len(batch), i + USERS_PER_QUERY >= len(users)

        finished, _ = full.advance(rt, steps(), started)
        mode = "full" if finished else "full (to be resumed)"
        if finished:
            if pruned := self.pruned(rt, run):
                save_state(rt.redis, JOB, pruned)
            full.finish(rt, self.now)
        return JobReport(REPORT, mode, users=tally.users, changed=tally.changed, announced=tally.announced)


def award(rt: Runtime, users: Sequence[int], tally: Tally, until: datetime, after: datetime | None) -> None:
    """Compute ``users``' tiers as of the rows inserted by ``until``, store what changed and the progress, announce
    what was never announced. ``after``: the slice start of an incremental run, where users go on from their progress
    unless they must be replayed whole; None: every user replayed whole."""
    ch = rt.clickhouse
    base: dict[str, Any] = {"owner_types": q.OWNER_STATE_TYPES, "tiers": list(TIERS), "until": until}
    whole, going_on = list(users), []
    if after is not None:
        late_params = {"users": list(users), "after": after, "until": until, "types": q.ARRIVAL_TYPES}
        late = {int(u) for (u,) in ch.rows(q.LATE_USERS_SQL, late_params)}
        whole, going_on = [u for u in users if u in late], [u for u in users if u not in late]
    rows = ch.rows(q.FULL_SQL, {**base, "users": whole}) if whole else []
    if going_on:
        rows += ch.rows(q.CONTINUE_SQL, {**base, "users": going_on, "after": after})
    earned: dict[tuple[int, str, int], Tier] = {}
    progress: dict[tuple[int, str], list[Any]] = {}
    for user, badge, tier, at, event_id, eid, running, peak in rows:
        if int(tier):
            t = Tier(int(user), str(badge), int(tier), as_utc(at), str(event_id))
            earned[t.key] = t
        else:
            progress[(int(user), str(badge))] = [as_utc(at), str(eid), int(running), int(peak)]
    current = _store_tiers(rt, users, set(whole), earned, until, tally)
    _store_progress(rt, users, whole, progress, until)
    tally.users += len(users)
    tally.replayed += len(whole)
    ordered = sorted(current, key=lambda t: (t.earned_at, t.event_id, t.key))
    for i in range(0, len(ordered), ANNOUNCE_CHUNK):
        tally.announced += announce_unrecorded(rt, ordered[i : i + ANNOUNCE_CHUNK])


def _store_tiers(
    rt: Runtime,
    users: Sequence[int],
    whole: set[int],
    earned: dict[tuple[int, str, int], Tier],
    version: datetime,
    tally: Tally,
) -> list[Tier]:
    """Write the tiers whose first reach changed, and take back the stored tiers a whole replay no longer finds (a
    continued replay only adds); returns every tier the users have earned now."""
    current: dict[tuple[int, str, int], Tier] = {}
    writes: list[list[Any]] = []
    for user, badge, tier, on, at, event_id in rt.clickhouse.rows(q.STORED_SQL, {"users": list(users)}):
        if not int(on):
            continue
        was = Tier(int(user), str(badge), int(tier), as_utc(at), str(event_id))
        now = earned.get(was.key)
        if now is None and was.user_id in whole:  # no longer earned (an announcement made stays made)
            writes.append([*was.key, 0, was.earned_at, was.event_id, version])
            continue
        current[was.key] = was
    for key, t in earned.items():
        if key not in current or (current[key].earned_at, current[key].event_id) != (t.earned_at, t.event_id):
            writes.append([*key, 1, t.earned_at, t.event_id, version])  # new, or a late event moved the first reach
            current[key] = t
    if writes:
        rt.clickhouse.insert(EARNED_TABLE, writes, EARNED_COLUMNS)
    tally.changed += len(writes)
    return list(current.values())


def _store_progress(
    rt: Runtime, users: Sequence[int], whole: list[int], progress: dict[tuple[int, str], list[Any]], until: datetime
) -> None:
    """Record where each replay ended: every badge of a user replayed whole (from zero where it found nothing), the
    badges a continued replay went on with, and each user's own row (when it was computed)."""
    rows = [[u, "", EPOCH, "", 0, 0, until, until] for u in users]
    for u in whole:
        rows += [[u, badge, *progress.get((u, badge), [EPOCH, "", 0, 0]), until, until] for badge in BADGES]
    replayed = set(whole)
    rows += [[u, badge, *done, until, until] for (u, badge), done in progress.items() if u not in replayed]
    rt.clickhouse.insert(PROGRESS_TABLE, rows, q.PROGRESS_COLUMNS)


def announce_unrecorded(rt: Runtime, tiers: Sequence[Tier]) -> int:
    """Announce the tiers ClickHouse does not record as announced, then record them; returns how many the stream
    got (tiers the registry already named, announced by a run that died before recording them or by a run racing
    this one, are recorded without a second entry)."""
    ch = rt.clickhouse
    users = sorted({t.user_id for t in tiers})
    while True:
        checked = time.monotonic()
        recorded = {(int(u), str(b), int(t)) for u, b, t in ch.rows(q.ANNOUNCED_SQL, {"users": users})}
        todo = [t for t in tiers if t.key not in recorded]
        if not todo:
            return 0
        failpoints.hit(failpoints.ACHIEVEMENTS_BEFORE_ANNOUNCE)
        if time.monotonic() - checked <= CHECK_VALID_S:
            break
    replies = announce(rt.redis, todo, rt.settings.achievements_stream_maxlen)
    failpoints.hit(failpoints.ACHIEVEMENTS_BEFORE_RECORD)
    rows = [[*t.key, t.earned_at, t.event_id, stream_id] for t, (stream_id, _) in zip(todo, replies, strict=True)]
    ch.insert(ANNOUNCED_TABLE, rows, ANNOUNCED_COLUMNS)
    return sum(1 for _, new in replies if new)


def prune(rt: Runtime, engine_now: datetime) -> int:
    """Remove from the Redis registry the tiers ClickHouse has recorded as announced for at least
    ``ACHIEVEMENTS_REGISTRY_HOLD_S`` (on the engine's clock); returns how many.

    Why a pruned field is never needed again: a run announces a tier only after finding it absent from ClickHouse's
    record, at most ``CHECK_VALID_S`` before its script call. A check that missed the record ran before the record
    was written, so the script call came less than ``CHECK_VALID_S`` after the record; the field goes no earlier
    than ``ACHIEVEMENTS_REGISTRY_HOLD_S`` after it, so the call still found it. Fields not recorded yet (a run died
    between its announcement and its record) stay until a later run records them."""
    r = rt.redis
    fields: dict[tuple[int, str, int], str] = {}
    for field, _ in r.hscan_iter(c.ACHIEVEMENTS_REGISTRY_KEY, count=PRUNE_SCAN):
        key = parse_field(str(field))
        if key is not None:
            fields[key] = str(field)
        if len(fields) >= PRUNE_MAX:
            break
    if not fields:
        return 0
    held_before = engine_now - timedelta(seconds=c.ACHIEVEMENTS_REGISTRY_HOLD_S)
    users = sorted({u for u, _, _ in fields})
    gone: list[str] = []
    for i in range(0, len(users), USERS_PER_QUERY):
        params = {"users": users[i : i + USERS_PER_QUERY], "held_before": held_before}
        for u, b, t in rt.clickhouse.rows(q.HELD_SQL, params):
            key = (int(u), str(b), int(t))
            if key in fields:
                gone.append(registry_field(key))
    for i in range(0, len(gone), PRUNE_SCAN):
        r.hdel(c.ACHIEVEMENTS_REGISTRY_KEY, *gone[i : i + PRUNE_SCAN])
    return len(gone)
