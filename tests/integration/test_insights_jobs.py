"""The jobs behind two creator insights, against the real engine and real Redis: ``recompute_peers`` (values and
percentiles among creators, read from a Redis snapshot) and ``award_achievements`` (badge tiers, each announced
once, ever, on ``achievements:earned``, whatever reruns, replays, redeliveries, exclusions, late events and
concurrent runs happen).

Events go into ClickHouse directly (owners known), except where a test replays dead letters through the worker.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.client import EventProducer
from app.core import constants as c
from app.core import failpoints
from app.core.events import Event, MetricType
from app.derived.job_state import JobReport
from app.derived.metrics_from_log import compute_user_metrics
from app.insights.achievements import read_achievements
from app.insights.peers import METRICS, POINTER_KEY, band, read_peers, switch
from app.jobs.achievements import award_achievements, prune
from app.jobs.peers import recompute_peers
from app.stores.clickhouse import insert_events
from app.stores.runtime import Runtime
from app.write import deadletters
from app.write.excluded import set_excluded
from app.write.replay import replay
from tests.properties import examples
from tests.stack import SERVER_MODE, wait_drained, wipe_clickhouse

T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)


def ev(entity_type: str, entity: int, actor: int, owner: int, metric: str, value: int, at: datetime) -> Event:
    return Event(uuid.uuid4(), entity_type, entity, actor, owner, MetricType(metric), value, at)


def follow(follower: int, user: int, at: datetime, value: int = 1) -> Event:
    return ev("User", user, follower, user, "Follow", value, at)


def stream(rt: Runtime) -> list[tuple[int, str, int, str, str]]:
    entries = cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(c.ACHIEVEMENTS_STREAM_KEY))
    return [(int(f["userId"]), f["badge"], int(f["tier"]), f["earnedAt"], f["eventId"]) for _, f in entries]


def earned(rt: Runtime, user: int) -> list[tuple[str, int, str, str]]:
    answer = read_achievements(rt, user)
    assert answer["userId"] == user
    return [(a["badge"], a["tier"], a["earnedAt"], a["eventId"]) for a in answer["earned"]]


def at_ms(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds")


# --- achievements ------------------------------------------------------------------------------------------------


def creator_history() -> tuple[list[Event], dict[str, Event]]:
    """User 7: an excluded user's follow (earliest), a self-follow and an own reaction (never count), twelve
    followers, one of whom leaves; an own download (counts) and one of 9 by another; an upload."""
    m = timedelta(minutes=1)
    named: dict[str, Event] = {}
    events = [
        follow(999, 7, T0 - m),  # excluded below
        follow(7, 7, T0 - m),  # oneself
        ev("Image", 55, 7, 7, "Upload", 1, T0),
        ev("Image", 55, 7, 7, "ReactionHeart", 1, T0 + m),  # oneself
    ]
    followers = [follow(100 + i, 7, T0 + i * m) for i in range(12)]
    named["follower1"], named["follower10"] = followers[0], followers[9]
    named["upload"] = events[2]
    named["own_download"] = ev("Image", 55, 7, 7, "Download", 1, T0 + 2 * m)
    named["reaction"] = ev("Image", 55, 8, 7, "ReactionLike", 1, T0 + 3 * m)
    named["download9"] = ev("Image", 55, 8, 7, "Download", 9, T0 + 4 * m)
    events += followers + [named["own_download"], named["reaction"], named["download9"]]
    events += [follow(100, 7, T0 + 20 * m, -1)]  # 11 followers: tier 10 stays earned
    return events, named


def expected_tiers(named: dict[str, Event]) -> list[tuple[str, int, str, str]]:
    def tier(badge: str, t: int, e: Event) -> tuple[str, int, str, str]:
        return (badge, t, at_ms(e.created_at), str(e.event_id))

    return [
        tier("downloads", 1, named["own_download"]),
        tier("downloads", 10, named["download9"]),
        tier("followers", 1, named["follower1"]),
        tier("followers", 10, named["follower10"]),
        tier("reactions", 1, named["reaction"]),
        tier("uploads", 1, named["upload"]),
    ]


def test_tiers_are_earned_by_the_first_reaching_event_and_ten_reruns_announce_nothing_new(clean: Runtime) -> None:
    set_excluded(clean, [999], True)
    events, named = creator_history()
    insert_events(clean.clickhouse, events)
    insert_events(clean.clickhouse, events[:5])  # redelivered rows count once
    report = award_achievements(clean)
    want = expected_tiers(named)
    assert earned(clean, 7) == want
    assert report.mode == "full" and report.announced == len(want)
    assert sorted((b, t, at, e) for _, b, t, at, e in stream(clean)) == sorted(want)
    for _ in range(10):
        again = award_achievements(clean)
        assert again.mode.startswith("incremental") and again.announced == 0
    forced = award_achievements(clean, full=True)
    assert forced.mode == "full" and forced.announced == 0
    assert len(stream(clean)) == len(want) and earned(clean, 7) == want
    assert read_achievements(clean, 8) == {"userId": 8, "earned": []}


def test_reinserted_events_and_replayed_dead_letters_announce_nothing_new(
    clean: Runtime, worker: Any, producer: EventProducer
) -> None:
    events, named = creator_history()
    insert_events(clean.clickhouse, events)
    award_achievements(clean)
    before, tiers = stream(clean), earned(clean, 7)
    # A backfill run again: the same events inserted once more.
    insert_events(clean.clickhouse, events)
    assert award_achievements(clean).announced == 0
    # Dead letters replayed: validated events back through the buffer, and an event task message sent again.
    deadletters.record(
        clean.redis,
        task=c.BUFFERED_EVENTS_TASK,
        reason="test",
        error="GaveUp",
        task_id="t1",
        kwargs={"source_task": c.RECORD_EVENTS, "events": [e.to_json() for e in events[4:10]]},
    )
    first = named["follower1"]
    deadletters.record(
        clean.redis,
        task=c.RECORD_FOLLOW,
        reason="test",
        error="Timeout",
        task_id="t2",
        kwargs={
            "follower_id": first.user_id,
            "user_id": 7,
            "event_id": str(first.event_id),
            "occurred_at": first.created_at.isoformat(),
        },
    )
    result = replay(clean.redis, producer)
    assert result.replayed == 2 and not result.refused
    wait_drained(clean)
    count = clean.clickhouse.rows(
        "SELECT count() FROM entityMetricEvents WHERE eventId = {id:UUID}", {"id": str(first.event_id)}
    )[0][0]
    assert count >= 3  # inserted twice, then written again by the worker
    assert award_achievements(clean).announced == 0
    assert award_achievements(clean, full=True).announced == 0
    assert stream(clean) == before and earned(clean, 7) == tiers


def test_a_run_that_dies_between_announcing_and_recording_is_not_announced_again(clean: Runtime) -> None:
    events, named = creator_history()
    insert_events(clean.clickhouse, events)

    def die() -> None:
        raise RuntimeError("killed between the announcement and its record")

    with failpoints.armed(failpoints.ACHIEVEMENTS_BEFORE_RECORD, die), pytest.raises(RuntimeError):
        award_achievements(clean)
    announced = stream(clean)
    assert len(announced) == len(expected_tiers(named))
    assert clean.clickhouse.rows("SELECT count() FROM achievementsAnnounced")[0][0] == 0
    assert award_achievements(clean).announced == 0  # the registry hash names them: recorded, not repeated
    assert stream(clean) == announced
    recorded = clean.clickhouse.rows("SELECT count(DISTINCT userId, badge, tier) FROM achievementsAnnounced")[0][0]
    assert recorded == len(announced)


def _runtime_like(rt: Runtime) -> Runtime:
    """Another process's runtime: its own Redis client (and its own ClickHouse client on a server; the embedded
    engine is one per process)."""
    return Runtime(rt.settings, clickhouse=None if SERVER_MODE else rt.clickhouse)


def test_two_runs_at_once_announce_each_tier_once(clean: Runtime) -> None:
    events, named = creator_history()
    more = [follow(300 + i, 8, T0 + timedelta(seconds=i)) for i in range(10)]
    insert_events(clean.clickhouse, events + more)
    # Both runs pass their check against ClickHouse's record before either announces: only the script can keep
    # them apart (the job's lock is bypassed: each thread calls the job itself).
    both_checked = threading.Barrier(2, timeout=60)
    reports: list[JobReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        rt = _runtime_like(clean)
        try:
            reports.append(award_achievements(rt))
        except BaseException as exc:
            errors.append(exc)

    with failpoints.armed(failpoints.ACHIEVEMENTS_BEFORE_ANNOUNCE, both_checked.wait):
        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors, errors
    announced = Counter((u, b, t) for u, b, t, _, _ in stream(clean))
    want = {(7, b, t) for b, t, _, _ in expected_tiers(named)} | {(8, "followers", 1), (8, "followers", 10)}
    assert set(announced) == want and all(n == 1 for n in announced.values()), announced
    assert sum(r.announced for r in reports) == len(want)
    assert award_achievements(clean).announced == 0


def test_excluding_a_user_takes_back_the_tiers_only_they_made_but_not_the_announcement(clean: Runtime) -> None:
    m = timedelta(minutes=1)
    followers = [follow(100 + i, 7, T0 + i * m) for i in range(9)]
    farm = follow(500, 7, T0 + 30 * m)  # the tenth follower
    reaction = ev("Image", 55, 500, 7, "ReactionLike", 1, T0 + 31 * m)  # the only reaction
    insert_events(clean.clickhouse, [ev("Image", 55, 7, 7, "Upload", 1, T0), *followers, farm, reaction])
    award_achievements(clean)
    with_farm = earned(clean, 7)
    assert {(b, t) for b, t, _, _ in with_farm} == {
        ("followers", 1),
        ("followers", 10),
        ("reactions", 1),
        ("uploads", 1),
    }
    announced = stream(clean)
    assert len(announced) == 4

    set_excluded(clean, [500], True)
    report = award_achievements(clean)
    assert report.mode == "full" and report.changed == 2
    assert {(b, t) for b, t, _, _ in earned(clean, 7)} == {("followers", 1), ("uploads", 1)}
    assert stream(clean) == announced  # an announcement made is never retracted

    # Another user's reaction earns the reactions tier again, by another event: stored, not announced again; in the
    # same run, the farm's tenth follow counts again (taken off the list).
    other = ev("Image", 55, 600, 7, "ReactionLike", 1, T0 + 40 * m)
    insert_events(clean.clickhouse, [other])
    set_excluded(clean, [500], False)
    assert award_achievements(clean).announced == 0
    assert earned(clean, 7) == with_farm and stream(clean) == announced
    set_excluded(clean, [500], True)  # one run writes a tier taken back and a tier moved to another event
    report = award_achievements(clean)
    assert report.changed == 2 and report.announced == 0
    assert ("reactions", 1, at_ms(other.created_at), str(other.event_id)) in earned(clean, 7)
    assert ("followers", 10) not in {(b, t) for b, t, _, _ in earned(clean, 7)} and stream(clean) == announced


def test_a_late_event_moving_a_first_reach_earlier_updates_earned_at(clean: Runtime) -> None:
    m = timedelta(minutes=1)
    followers = [follow(100 + i, 7, T0 + (10 + i) * m) for i in range(10)]
    insert_events(clean.clickhouse, followers)
    award_achievements(clean)
    assert earned(clean, 7) == [
        ("followers", 1, at_ms(followers[0].created_at), str(followers[0].event_id)),
        ("followers", 10, at_ms(followers[9].created_at), str(followers[9].event_id)),
    ]
    announced = stream(clean)
    late = follow(200, 7, T0)  # arrives now, older than every counted follow
    insert_events(clean.clickhouse, [late])
    report = award_achievements(clean)
    assert report.mode.startswith("incremental (1 of 1") and report.changed == 2 and report.announced == 0
    assert earned(clean, 7) == [
        ("followers", 1, at_ms(late.created_at), str(late.event_id)),
        ("followers", 10, at_ms(followers[8].created_at), str(followers[8].event_id)),
    ]
    assert stream(clean) == announced  # announced once, with what was known then
    # A late unfollow before the tenth follow: ten is first reached one follow later (the eleventh), not earlier.
    insert_events(clean.clickhouse, [follow(201, 7, T0 + 30 * m), follow(101, 7, T0 + 15 * m, -1)])
    award_achievements(clean)
    assert earned(clean, 7)[1][2] == at_ms(followers[9].created_at)


def test_registry_fields_go_once_clickhouse_has_held_them_for_the_hold_time(clean: Runtime) -> None:
    insert_events(clean.clickhouse, [follow(100, 7, T0)])
    award_achievements(clean)
    clean.redis.hset(c.ACHIEVEMENTS_REGISTRY_KEY, "8:followers:1", "1-0")  # announced, not recorded yet
    engine_now = clean.clickhouse.rows("SELECT now64(3, 'UTC')")[0][0].replace(tzinfo=UTC)
    assert prune(clean, engine_now) == 0  # recorded a moment ago: kept
    later = engine_now + timedelta(seconds=c.ACHIEVEMENTS_REGISTRY_HOLD_S + 1)
    assert prune(clean, later) == 1
    assert clean.redis.hkeys(c.ACHIEVEMENTS_REGISTRY_KEY) == ["8:followers:1"]  # kept until recorded
    assert 0 < clean.redis.ttl(c.ACHIEVEMENTS_REGISTRY_KEY) and 0 < clean.redis.ttl(c.ACHIEVEMENTS_STREAM_KEY)


def replayed(events: list[Event], excluded: set[int], user: int) -> list[tuple[str, int, str, str]]:
    """The definition, replayed in Python: each event id once, in (createdAt, eventId) order, per badge."""
    unique = sorted({e.event_id: e for e in events}.values(), key=lambda e: (e.created_at, str(e.event_id)))
    out = []
    for badge in ("downloads", "followers", "reactions", "uploads"):
        states: dict[tuple[str, int, str, int], bool] = {}
        total, tiers = 0, [1, 10, 100, 1000]
        for e in unique:
            metric, actor = e.metric_type.value, e.user_id
            if actor in excluded:
                continue
            if badge == "downloads" and metric == "Download" and e.owner_id == user:
                total += e.metric_value
            elif (
                (badge == "followers" and metric == "Follow" and e.entity_id == user and actor != user)
                or (badge == "reactions" and metric.startswith("Reaction") and e.owner_id == user and actor != user)
                or (badge == "uploads" and metric == "Upload" and actor == user)
            ):
                states[(e.entity_type, e.entity_id, metric, actor)] = e.metric_value > 0
                total = sum(states.values())
            else:
                continue
            while tiers and total >= tiers[0]:
                out.append((badge, tiers.pop(0), at_ms(e.created_at), str(e.event_id)))
    return out


@settings(max_examples=examples(15), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_runs_going_on_from_their_progress_match_the_definition(rt: Runtime, data: Any) -> None:
    rt.redis.flushdb()
    wipe_clickhouse(rt)
    owners = {101: 1, 102: 2}
    log: list[Event] = []
    excluded = {12} if data.draw(st.booleans(), label="exclude 12") else set()
    if excluded:
        set_excluded(rt, excluded, True)
    for batch in range(4):
        day = T0 + timedelta(days=batch)
        events = []
        for _ in range(data.draw(st.integers(1, 25), label="size")):
            late = data.draw(st.integers(0, 19)) == 0  # now and then older than what was counted
            at = (T0 - timedelta(days=1) if late else day) + timedelta(minutes=data.draw(st.integers(0, 3)))
            kinds = ["follow", "follow", "follow", "reaction", "download", "download", "upload"]
            kind = data.draw(st.sampled_from(kinds))
            actor = data.draw(st.integers(1, 12))
            value = data.draw(st.sampled_from([1, 1, -1]))
            if kind == "follow":
                events.append(follow(actor, data.draw(st.sampled_from([1, 2])), at, value))
            elif kind == "upload":
                image = data.draw(st.sampled_from([101, 102]))
                events.append(ev("Image", image, owners[image], owners[image], "Upload", value, at))
            else:
                image = data.draw(st.sampled_from([101, 102]))
                metric = "ReactionLike" if kind == "reaction" else "Download"
                amount = value if kind == "reaction" else data.draw(st.integers(1, 60))
                events.append(ev("Image", image, actor, owners[image], metric, amount, at))
        again = data.draw(st.lists(st.sampled_from(log), max_size=2)) if log and data.draw(st.booleans()) else []
        insert_events(rt.clickhouse, events + again)  # with some redelivered
        log += events
        award_achievements(rt)
        for user in (1, 2):
            assert earned(rt, user) == sorted(replayed(log, excluded, user)), (batch, user)
    assert award_achievements(rt, full=True).changed == 0  # a whole replay finds nothing to change
    announced = Counter((u, b, t) for u, b, t, _, _ in stream(rt))
    assert all(n == 1 for n in announced.values())
    assert set(announced) >= {(u, b, t) for u in (1, 2) for b, t, _, _ in earned(rt, u)}


def test_an_event_dated_ahead_counts_from_the_run_its_time_falls_in(clean: Runtime) -> None:
    import time

    m = timedelta(minutes=1)
    insert_events(clean.clickhouse, [follow(100 + i, 7, T0 + i * m) for i in range(9)])
    award_achievements(clean)
    ahead = follow(200, 7, datetime.now(UTC) + timedelta(seconds=25))  # the tenth, dated 25 s ahead
    insert_events(clean.clickhouse, [ahead])
    assert award_achievements(clean).announced == 0  # not yet: it has not happened
    time.sleep(12)  # past the next run's look-back: the row is no longer in its slice by insertion
    assert award_achievements(clean).announced == 0
    assert [t for _, t, _, _ in earned(clean, 7)] == [1]
    time.sleep(max(0.0, (ahead.created_at - datetime.now(UTC)).total_seconds()) + 1)
    assert award_achievements(clean).announced == 1  # its time fell in this run's slice
    assert earned(clean, 7)[-1] == ("followers", 10, at_ms(ahead.created_at), str(ahead.event_id))


# --- peers -------------------------------------------------------------------------------------------------------


def standing(value: Any, user: int, values: dict[int, Any]) -> dict[str, Any]:
    """below, equal (others), population and percentile of ``value`` among ``values`` (creator -> value)."""
    below = sum(1 for v in values.values() if v < value)
    equal = sum(1 for u, v in values.items() if v == value and u != user)
    population = len(values)
    percentile = round(100 * (below + equal / 2) / population, 2) if population else 0.0
    return {"below": below, "equal": equal, "population": population, "percentile": percentile}


def test_peers_before_any_run_say_so(clean: Runtime) -> None:
    answer = read_peers(clean, 1)
    assert answer["asOf"] is None and answer["band"] is None
    assert set(answer["metrics"]) == set(METRICS)
    for m in answer["metrics"].values():
        assert m["value"] is None and m["population"] == 0 and m["band"]["population"] == 0


def test_peers_values_and_percentiles_on_a_small_population(clean: Runtime) -> None:
    now = datetime.now(UTC)
    day, old = now - timedelta(days=1), now - timedelta(days=40)
    events = [ev("Image", 100 + u, u, u, "Upload", 1, old) for u in (1, 2, 3, 4)]  # creators 1-4
    events += [follow(10 + i, 1, old if i < 2 else day) for i in range(12)]  # 12 followers, 10 in 30 days
    events += [follow(10 + i, 2, day) for i in range(5)]  # 5, all new
    events += [follow(10 + i, 3, old if i < 2 else day) for i in range(5)]  # 5, 3 new...
    events += [follow(15, 3, old), follow(15, 3, day, -1)]  # ...and one old follower gone: growth 2
    events += [follow(99, 4, day), follow(4, 4, day)]  # an excluded user and oneself: user 4 has none
    events += [follow(10, 5, day), follow(11, 5, day)]  # user 5 is no creator
    events += [
        ev("Image", 101, 10, 1, "ReactionLike", 1, day),
        ev("Image", 101, 11, 1, "ReactionHeart", 1, day),
        ev("Image", 102, 10, 2, "ReactionLike", 1, day),
        ev("Image", 103, 3, 3, "ReactionLike", 1, day),  # oneself
        ev("Image", 101, 10, 1, "Download", 3, day),
        ev("Image", 102, 2, 2, "Download", 1, day),  # one's own download counts
        ev("Image", 104, 99, 4, "Download", 5, day),  # excluded
    ]
    insert_events(clean.clickhouse, events + events[:6])
    set_excluded(clean, [99], True)
    report = recompute_peers(clean)
    assert report.users == 4  # creators

    answer = read_peers(clean, 2)
    as_of = datetime.fromisoformat(answer["asOf"])
    assert now - timedelta(seconds=1) <= as_of <= datetime.now(UTC)
    metrics = compute_user_metrics(clean.clickhouse, range(1, 7), weights=clean.weights, window=clean.window, now=as_of)
    growth = {1: 10, 2: 5, 3: 2, 4: 0, 5: 2, 6: 0}
    values = {
        u: {
            "followerCount": metrics[u].follower_count,
            "engagementScore": float(metrics[u].engagement_score),
            "reactionCount": metrics[u].reaction_count,
            "downloadCount": metrics[u].download_count,
            "followerGrowth30d": growth[u],
        }
        for u in range(1, 7)
    }
    assert [values[u]["followerCount"] for u in range(1, 7)] == [12, 5, 5, 0, 2, 0]
    assert [values[u]["reactionCount"] for u in range(1, 7)] == [2, 1, 0, 0, 0, 0]
    assert [values[u]["downloadCount"] for u in range(1, 7)] == [3, 1, 0, 0, 0, 0]
    creators = (1, 2, 3, 4)
    for user in range(1, 7):
        got = read_peers(clean, user)
        user_band = band(values[user]["followerCount"])
        assert got["asOf"] == answer["asOf"] and got["band"] == user_band, got
        in_band = [u for u in creators if band(values[u]["followerCount"]) == user_band]
        for name in METRICS:
            want = {
                "value": values[user][name],
                **standing(values[user][name], user, {u: values[u][name] for u in creators}),
                "band": standing(values[user][name], user, {u: values[u][name] for u in in_band}),
            }
            assert got["metrics"][name] == want, (user, name)
    # Worked by hand: user 2 has 5 followers; creators have 12, 5, 5 and 0; in band 1-9, creators 2 and 3.
    follower = read_peers(clean, 2)["metrics"]["followerCount"]
    assert (follower["below"], follower["equal"], follower["population"], follower["percentile"]) == (1, 1, 4, 37.5)
    assert follower["band"] == {"below": 0, "equal": 1, "population": 2, "percentile": 25.0}
    nobody = read_peers(clean, 6)  # no creator, no values: zeros, band 0, compared with creator 4
    assert nobody["band"] == "0" and nobody["metrics"]["followerCount"]["band"]["population"] == 1
    assert nobody["metrics"]["followerCount"]["percentile"] == 12.5
    assert nobody["metrics"]["engagementScore"]["value"] == 0.0


def test_peers_leave_out_events_dated_after_the_run(clean: Runtime) -> None:
    day = datetime.now(UTC) - timedelta(days=1)
    insert_events(
        clean.clickhouse,
        [
            ev("Image", 101, 1, 1, "Upload", 1, day),
            ev("Image", 101, 2, 1, "ReactionLike", 1, day),
            ev("Image", 101, 2, 1, "ReactionLike", -1, datetime.now(UTC) + timedelta(minutes=30)),  # dated ahead
        ],
    )
    recompute_peers(clean)
    assert read_peers(clean, 1)["metrics"]["reactionCount"]["value"] == 1  # as of the run: still on


def test_a_run_switches_generations_whole_and_every_key_expires(clean: Runtime) -> None:
    insert_events(clean.clickhouse, [ev("Image", 101, 1, 1, "Upload", 1, T0), follow(2, 1, T0)])
    recompute_peers(clean)
    first = clean.redis.get(POINTER_KEY)
    recompute_peers(clean)
    second = clean.redis.get(POINTER_KEY)
    assert first != second
    keys = [str(k) for k in clean.redis.scan_iter(match=f"{c.PEERS_KEY_PREFIX}*")]
    assert keys and all(str(second).split("|")[0] in k for k in keys if k != POINTER_KEY)  # the old one unlinked
    assert all(0 < clean.redis.pttl(k) for k in keys)
    expiries = {clean.redis.pexpiretime(k) for k in keys}
    assert len(expiries) == 1  # the pointer expires with the keys it names
    # A run that started earlier but finished later does not replace the newer snapshot.
    older = datetime(2020, 1, 1, tzinfo=UTC)
    switched, current = switch(clean.redis, "older", [], older, datetime.now(UTC) + timedelta(hours=1))
    assert not switched and current == second and clean.redis.get(POINTER_KEY) == second
    assert read_peers(clean, 1)["metrics"]["followerCount"] == {
        "value": 1,
        "below": 0,
        "equal": 0,
        "population": 1,
        "percentile": 0.0,
        "band": {"below": 0, "equal": 0, "population": 1, "percentile": 0.0},
    }
