"""Property: for any history written to ClickHouse with redeliveries, in any order, over several inserts (later
inserts holding events older than those already counted), with follows undone and redone, users excluded and
taken off the list again, every creator insight equals the oracle of ``tests.insights_oracle`` computed from the
same events applied once in order.

Events sit on day, week (Monday) and daylight-saving boundaries of UTC, Europe/Berlin and America/New_York, and
many share a ``createdAt`` (the event id decides). Events go into ClickHouse directly (owners already known): the
read side is under test, with the real engine and real Redis. Peers and achievements are read from what their
jobs keep, after a run.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.derived import changelog
from app.insights.service import UserInsightsService
from app.jobs.insight_histories import update_insight_histories
from app.stores.clickhouse import insert_events
from app.stores.runtime import Runtime
from app.write.excluded import set_excluded
from bench.oracle import E
from tests import insights_oracle as oracle
from tests.insights_oracle import Insights
from tests.integration.test_read_properties import to_event
from tests.properties import examples
from tests.stack import wipe_clickhouse

USERS = (1, 2, 3, 4)
IMAGES = (100, 101, 102, 103)
MODELS = (200,)
OWNER = {100: 1, 101: 1, 102: 2, 103: 3, 200: 4}
REACTION_METRICS = ("ReactionLike", "ReactionHeart", "ReactionLaugh", "ReactionCry")
ZONES = ("UTC", "Europe/Berlin", "America/New_York")
# Daylight-saving switches of the zones above: Berlin (last Sundays of March and October, 01:00 UTC), New York
# (second Sunday of March at 07:00 UTC, first Sunday of November at 06:00 UTC).
DST_SWITCHES = (
    datetime(2026, 3, 8, 7, tzinfo=UTC),
    datetime(2026, 3, 29, 1, tzinfo=UTC),
    datetime(2026, 10, 25, 1, tzinfo=UTC),
    datetime(2026, 11, 1, 6, tzinfo=UTC),
)
# Two seasons (first day, last day), each with both zones' switches; a history lies in one of them.
SEASONS = ((date(2026, 3, 5), date(2026, 4, 1)), (date(2026, 10, 21), date(2026, 11, 4)))
SETTINGS = settings(max_examples=examples(25), deadline=None, suppress_health_check=list(HealthCheck))
ACHIEVEMENTS_STREAM = "achievements:earned"

users = st.sampled_from(USERS)
creators = st.sampled_from((1, 1, 2, 3, 4))  # user 1 owns two images: the most collisions


def boundaries(first: date, last: date) -> tuple[list[datetime], list[datetime]]:
    """The season's local Monday midnights in every zone and its switches; and every local midnight."""
    weeks = {s for s in DST_SWITCHES if first <= s.date() <= last}
    days = set(weeks)
    day = first
    while day <= last:
        midnights = {oracle.day_start(day, ZoneInfo(zone)) for zone in ZONES}
        days |= midnights
        weeks |= midnights if day.weekday() == 0 else set()
        day += timedelta(days=1)
    return sorted(weeks), sorted(days)


ANCHORS = [boundaries(first, last) for first, last in SEASONS]
# Offsets from an anchor in milliseconds: a few fixed ones (so that events tie on createdAt), or anywhere nearby.
offsets = st.one_of(
    st.sampled_from([0, 0, -1, 1, -1000, 3_600_000, -3_600_000]),
    st.integers(-3 * 3_600_000, 3 * 3_600_000),
    st.integers(-2 * 86_400_000, 2 * 86_400_000),
).map(lambda ms: timedelta(milliseconds=ms))
# Mostly likes: reactions of one user on one image often share their key.
reaction_types = st.sampled_from(("ReactionLike", "ReactionLike", "ReactionLike", *REACTION_METRICS[1:]))
# On and off steps of one key; a step is at the same instant as the one before it, a millisecond or hours later.
stories = st.sampled_from([[1, -1], [1, -1, 1], [-1, 1], [1, 1, -1], [1, -1, 1, 1]])
gaps = st.sampled_from([timedelta(0), timedelta(0), timedelta(milliseconds=1), timedelta(hours=2), timedelta(days=1)])


def instants(anchors: list[datetime]) -> st.SearchStrategy[datetime]:
    return st.builds(lambda anchor, offset: anchor + offset, st.sampled_from(anchors), offsets)


def new_id(draw: Any) -> str:
    return str(draw(st.uuids()))


def entity_of(draw: Any, user: int | None, choices: tuple[int, ...]) -> tuple[str, int]:
    """An entity, most often one of ``user``'s (when given and there is one)."""
    own = [entity for entity in choices if OWNER[entity] == user]
    entity = draw(st.sampled_from(own)) if own and draw(st.integers(0, 2)) else draw(st.sampled_from(choices))
    return ("Image" if entity in IMAGES else "Model"), entity


def a_follow(draw: Any, user: int | None) -> tuple[str, int, int, int, str]:
    """(entityType, entityId, actor, owner, metricType) of a follow: half of them of ``user``, now and then of
    oneself (which never counts)."""
    followed = user if user is not None and draw(st.booleans()) else draw(users)
    follower = followed if draw(st.integers(0, 5)) == 0 else draw(users.filter(lambda u: u != followed))
    return ("User", followed, follower, followed, "Follow")


def a_reaction(draw: Any, user: int | None, actor: int | None = None) -> tuple[str, int, int, int, str]:
    _, image = entity_of(draw, user, IMAGES)
    return ("Image", image, draw(users) if actor is None else actor, OWNER[image], draw(reaction_types))


def a_story(draw: Any, key: tuple[str, int, int, int, str], when: datetime) -> list[E]:
    etype, entity, actor, owner, metric = key
    story = []
    for step, value in enumerate(draw(stories)):
        when = when + draw(gaps) * bool(step)
        story.append(E(new_id(draw), etype, entity, actor, owner, metric, value, when))
    return story


def an_amount(
    draw: Any, user: int | None, when: datetime, values: st.SearchStrategy[int], actor: int | None = None
) -> E:
    """A download (most often), generation, comment or view (which counts in no insight)."""
    etype, entity = entity_of(draw, user, IMAGES + MODELS)
    metric = draw(st.sampled_from(["Download", "Download", "Generation", "Comment", "View"]))
    value = draw(values) if metric == "Download" else draw(st.integers(1, 3))
    return E(new_id(draw), etype, entity, draw(users) if actor is None else actor, OWNER[entity], metric, value, when)


def a_fan(draw: Any, user: int | None, when: datetime, values: st.SearchStrategy[int]) -> list[E]:
    """A follow (or an unfollow) and, at the same instant or a millisecond apart, a reaction or a download by the
    same user on the followed user's entity: who is a follower at that instant decides the audience's split."""
    _, followed, actor, _, _ = a_follow(draw, user)
    follow = E(new_id(draw), "User", followed, actor, followed, "Follow", draw(st.sampled_from([1, -1])), when)
    then = when + draw(
        st.sampled_from([timedelta(0), timedelta(0), timedelta(milliseconds=1), -timedelta(milliseconds=1)])
    )
    if draw(st.booleans()):
        etype, entity, _, owner, metric = a_reaction(draw, followed, actor)
        return [follow, E(new_id(draw), etype, entity, actor, owner, metric, 1, then)]
    return [follow, an_amount(draw, followed, then, values, actor)]


@st.composite
def events(
    draw: Any, at: st.SearchStrategy[datetime], user: int | None, download_values: st.SearchStrategy[int]
) -> list[E]:
    """One event, or a short story of one key (follow, unfollow, refollow; reaction on and off), or a fan's follow
    and action at one instant. Most of them concern ``user`` when given."""
    kind = draw(st.sampled_from(["follow", "story", "story", "reaction", "fan", "upload", "additive", "additive"]))
    when = draw(at)
    if kind == "upload":
        etype, entity = entity_of(draw, user, IMAGES + MODELS)
        on = draw(st.sampled_from([1, -1]))
        return [E(new_id(draw), etype, entity, OWNER[entity], OWNER[entity], "Upload", on, when)]
    if kind == "additive":
        return [an_amount(draw, user, when, download_values)]
    if kind == "fan":
        return a_fan(draw, user, when, download_values)
    key = a_follow(draw, user) if kind == "follow" or draw(st.booleans()) else a_reaction(draw, user)
    if kind == "story":
        return a_story(draw, key, when)
    etype, entity, actor, owner, metric = key
    return [E(new_id(draw), etype, entity, actor, owner, metric, draw(st.sampled_from([1, -1])), when)]


def histories(
    at: st.SearchStrategy[datetime], user: int | None = None, max_size: int = 25, download_values: Any = None
) -> Any:
    values = download_values if download_values is not None else st.integers(1, 4)
    return st.lists(events(at, user, values), min_size=3, max_size=max_size).map(_once)


def _once(groups: list[list[E]]) -> list[E]:
    """The drawn events, one per event id."""
    unique: dict[str, E] = {}
    for e in (e for group in groups for e in group):
        unique.setdefault(e.event_id, e)
    return list(unique.values())


def deliveries(data: Any, history: list[E]) -> list[list[E]]:
    """The history with redeliveries, shuffled, over two or three inserts; now and then newest first, so that a
    later insert holds only events older than those already inserted."""
    dupes = data.draw(st.lists(st.sampled_from(history), max_size=8), label="redelivered")
    delivery = list(data.draw(st.permutations(history + dupes), label="delivery"))
    if data.draw(st.booleans(), label="newest first"):
        delivery.sort(key=lambda e: e.at, reverse=True)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(delivery)), min_size=1, max_size=2), label="cuts"))
    bounds = [0, *cuts, len(delivery)]
    return [delivery[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


Check = Callable[[list[E], set[int]], None]


def replay(
    rt: Runtime, data: Any, history: list[E], check: Check, *, after_each: Callable[[], None] | None = None
) -> None:
    """Insert the deliveries one by one, exclude users after one of them, take some of them off the list again at
    the end, and ``check`` (the events inserted so far, the excluded set) after some inserts and at the end.

    By default (``after_each`` not given) the insights' histories job runs after some inserts, so that reads take
    the history tables for the keys that did not change since and the log for those that did (and the log alone
    before the first run): the same answers either way."""
    rt.redis.flushdb()
    wipe_clickhouse(rt)
    if after_each is None:

        def after_each() -> None:
            if data.draw(st.booleans(), label="histories job runs"):
                with pytest.MonkeyPatch.context() as mp:  # cut at the run's instant: later inserts come after it
                    mp.setattr(changelog, "INFLIGHT_MARGIN", timedelta(0))
                    update_insight_histories(rt)

    parts = deliveries(data, history)
    added = set(data.draw(st.lists(users, max_size=2), label="excluded"))
    removed = (
        set(data.draw(st.lists(st.sampled_from(sorted(added)), max_size=1), label="taken off")) if added else set()
    )
    exclude_after = data.draw(st.integers(0, len(parts) - 1), label="excluded after insert")
    inserted: list[E] = []
    excluded: set[int] = set()
    for index, part in enumerate(parts):
        insert_events(rt.clickhouse, [to_event(e) for e in part])
        inserted += part
        if index == exclude_after and added:
            set_excluded(rt, added, excluded=True, reason="test")
            excluded = set(added)
        if after_each is not None:
            after_each()
        if index < len(parts) - 1 and data.draw(st.booleans(), label="check now"):
            check(inserted, excluded)
    if removed:
        set_excluded(rt, removed, excluded=False, reason="test")
        excluded -= removed
        if after_each is not None:
            after_each()
    check(inserted, excluded)


@dataclass(frozen=True)
class Scene:
    """What a history is drawn around: the creator whose insights are read, a zone, and the boundaries (one to
    three) that the events sit near."""

    season: int
    user: int
    tz: str
    anchors: list[datetime]
    history: list[E]


def a_scene(data: Any, weekly: bool = False) -> Scene:
    """A scene near day boundaries, or (``weekly``) near week boundaries only."""
    season = data.draw(st.sampled_from([0, 1]), label="season")
    user = data.draw(creators, label="user")
    tz = data.draw(st.sampled_from(ZONES), label="tz")
    weeks, days = ANCHORS[season]
    anchor = st.sampled_from(weeks) if weekly else st.sampled_from(weeks) | st.sampled_from(days)
    anchors = data.draw(st.lists(anchor, min_size=1, max_size=3, unique=True), label="anchors")
    history = data.draw(histories(instants(anchors), user), label="history")
    return Scene(season, user, tz, anchors, history)


def as_ofs(data: Any, scene: Scene) -> datetime:
    """After every event of the season, or in the middle of the events (at one of them, or anywhere near them,
    now and then between two milliseconds)."""
    choice = data.draw(st.sampled_from(["after", "at an event", "nearby"]), label="as of")
    if choice == "after":
        return datetime.combine(SEASONS[scene.season][1] + timedelta(days=5), datetime.min.time(), tzinfo=UTC)
    at: datetime
    if choice == "at an event":
        at = data.draw(st.sampled_from(scene.history), label="as of event").at
    else:
        at = data.draw(instants(scene.anchors), label="as of instant")
    between = [timedelta(0), timedelta(microseconds=500), -timedelta(microseconds=500)]
    shift: timedelta = data.draw(st.sampled_from(between), label="as of shift")
    return at + shift


def a_range(data: Any, scene: Scene) -> tuple[date, date]:
    """Days around the anchors (local days of the scene's zone)."""
    zone = ZoneInfo(scene.tz)
    first = min(scene.anchors).astimezone(zone).date() - timedelta(days=data.draw(st.integers(0, 3), label="from"))
    last = max(scene.anchors).astimezone(zone).date() + timedelta(days=data.draw(st.integers(-1, 3), label="to"))
    return first, max(first, last)


# --- growth, retention, audience, activity (read time) ----------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_growth_matches_the_oracle(clean: Runtime, data: Any) -> None:
    scene = a_scene(data)
    user, tz, as_of = scene.user, scene.tz, as_ofs(data, scene)
    start, end = a_range(data, scene)

    def check(inserted: list[E], excluded: set[int]) -> None:
        got = UserInsightsService(clean).growth(user, start, end, tz=tz, as_of=as_of)
        expected = Insights(inserted, excluded, as_of).growth(user, start, end, tz)
        assert got == expected, (user, tz, as_of, excluded, start, end)
        for before, day in zip(got["days"], got["days"][1:], strict=False):  # the definition's invariant
            assert day["followers"] == before["followers"] + day["gained"] - day["lost"], (before, day)

    replay(clean, data, scene.history, check)


@SETTINGS
@given(data=st.data())
def test_retention_matches_the_oracle(clean: Runtime, data: Any) -> None:
    scene = a_scene(data, weekly=True)
    user, tz, as_of = scene.user, scene.tz, as_ofs(data, scene)
    weeks = data.draw(st.integers(1, 7), label="weeks")

    def check(inserted: list[E], excluded: set[int]) -> None:
        got = UserInsightsService(clean).retention(user, weeks=weeks, tz=tz, as_of=as_of)
        expected = Insights(inserted, excluded, as_of).retention(user, weeks, tz)
        assert datetime.fromisoformat(got["asOf"]) == as_of
        assert {**got, "asOf": None} == {**expected, "asOf": None}, (user, tz, as_of, weeks, excluded)

    replay(clean, data, scene.history, check)


@SETTINGS
@given(data=st.data())
def test_audience_matches_the_oracle(clean: Runtime, data: Any) -> None:
    scene = a_scene(data)
    user, tz, as_of = scene.user, scene.tz, as_ofs(data, scene)
    start, end = a_range(data, scene)

    def check(inserted: list[E], excluded: set[int]) -> None:
        got = UserInsightsService(clean).audience(user, start, end, tz=tz, as_of=as_of)
        expected = Insights(inserted, excluded, as_of).audience(user, start, end, tz)
        assert got == expected, (user, tz, as_of, excluded, start, end)

    replay(clean, data, scene.history, check)


@SETTINGS
@given(data=st.data())
def test_activity_matches_the_oracle(clean: Runtime, data: Any) -> None:
    scene = a_scene(data)
    user, tz = scene.user, scene.tz
    days = data.draw(st.sampled_from([1, 2, 7, 28]), label="days")
    received = [e for e in scene.history if e.owner_id == user and e.metric_type not in ("Follow", "Upload")]
    if received and data.draw(st.booleans(), label="window starts at an event"):
        # An event the user received sits exactly at the window's (excluded) start.
        as_of = data.draw(st.sampled_from(received), label="first out").at + timedelta(days=days)
    else:
        as_of = as_ofs(data, scene)

    def check(inserted: list[E], excluded: set[int]) -> None:
        got = UserInsightsService(clean).activity(user, days=days, tz=tz, as_of=as_of)
        expected = Insights(inserted, excluded, as_of).activity(user, days, tz)
        assert got == expected, (user, tz, as_of, days, excluded)

    replay(clean, data, scene.history, check)


# --- peers and achievements (kept by their jobs) ----------------------------------------------------------------

NOW = datetime.now(UTC).replace(microsecond=0)
# Hours back from the test's start: inside and outside the 30-day windows (engagement, follower growth). The run's
# instant is later by seconds, so no event sits on a window's edge itself.
recent = st.builds(
    lambda hours, ms: NOW - timedelta(hours=hours, milliseconds=ms),
    st.integers(1, 60 * 24),
    st.sampled_from([0, 0, 1, 500]),
)


def assert_peers(got: dict[str, Any], expected: dict[str, Any], context: object) -> None:
    assert got["userId"] == expected["userId"] and got["band"] == expected["band"], (got, expected, context)
    assert set(got["metrics"]) == set(expected["metrics"]), (got, context)
    for name, want in expected["metrics"].items():
        have = got["metrics"][name]
        assert have["value"] == pytest.approx(want["value"]), (name, have, want, context)
        for part in ("below", "equal", "population"):
            assert have[part] == want[part], (name, part, have, want, context)
            assert have["band"][part] == want["band"][part], (name, "band", part, have, want, context)
        assert have["percentile"] == pytest.approx(want["percentile"]), (name, have, want, context)
        assert have["band"]["percentile"] == pytest.approx(want["band"]["percentile"]), (name, have, want, context)


def in_the_past(events: list[E]) -> list[E]:
    """The events dated before the test started (a story's later steps may fall after it). The jobs keep the
    current state of the log, as ``user:metrics`` serves it, which counts an event dated in the future at once."""
    return [e for e in events if e.at < NOW]


@st.composite
def crowds(draw: Any) -> list[E]:
    """Up to a dozen more users who follow one of ``USERS`` (its band can reach 10-99, its followers badge tier 10),
    some of them unfollowing later, some of them creators (uploads of their own) with no followers."""
    followed = draw(users)
    crowd = range(11, 11 + draw(st.integers(0, 12)))
    follows = [E(new_id(draw), "User", followed, fan, followed, "Follow", 1, draw(recent)) for fan in crowd]
    follows += [
        E(
            new_id(draw),
            "User",
            followed,
            e.user_id,
            followed,
            "Follow",
            -1,
            e.at + timedelta(hours=draw(st.integers(0, 9))),
        )
        for e in follows
        if draw(st.integers(0, 3)) == 0
    ]
    uploads = [
        E(new_id(draw), "Model", 300 + fan, fan, fan, "Upload", 1, draw(recent)) for fan in crowd if draw(st.booleans())
    ]
    return follows + uploads


@SETTINGS
@given(history=histories(recent, max_size=30), crowd=crowds(), data=st.data())
def test_peers_match_the_oracle_after_a_run(clean: Runtime, history: list[E], crowd: list[E], data: Any) -> None:
    from app.jobs.peers import recompute_peers

    everyone = sorted({*USERS, *(e.user_id for e in crowd)})
    shown = [*USERS, *everyone[len(USERS) :][:2]]  # a crowd member or two as well

    def check(inserted: list[E], excluded: set[int]) -> None:
        recompute_peers(clean)
        service = UserInsightsService(clean)
        for user in shown:
            got = service.peers(user)
            as_of = datetime.fromisoformat(got["asOf"])
            assert NOW <= as_of <= datetime.now(UTC)
            expected = oracle.peers(inserted, excluded, user, everyone, as_of)
            assert_peers(got, expected, (user, as_of, excluded))

    past = in_the_past(history + crowd)
    assume(past)
    replay(clean, data, past, check)


def _earned(answer: dict[str, Any]) -> Counter[tuple[str, int, str, datetime]]:
    return Counter(
        (a["badge"], int(a["tier"]), str(a["eventId"]).lower(), datetime.fromisoformat(a["earnedAt"]))
        for a in answer["earned"]
    )


@SETTINGS
@given(
    history=histories(recent | instants(ANCHORS[1][1]), max_size=40, download_values=st.integers(1, 40)),
    crowd=crowds(),
    data=st.data(),
)
def test_achievements_match_the_oracle_and_each_tier_is_announced_once(
    clean: Runtime, history: list[E], crowd: list[E], data: Any
) -> None:
    from app.jobs.achievements import award_achievements

    everyone = sorted({*USERS, *(e.user_id for e in crowd)})

    def run() -> None:
        award_achievements(clean)

    def check(inserted: list[E], excluded: set[int]) -> None:
        run()
        run()  # a second run changes nothing
        service = UserInsightsService(clean)
        for user in everyone:
            expected = oracle.achievements(inserted, excluded, user, datetime.now(UTC))
            assert _earned(service.achievements(user)) == _earned(expected), (user, excluded)

    past = in_the_past(history + crowd)
    assume(past)
    replay(clean, data, past, check, after_each=run)
    entries = cast(list[tuple[str, dict[str, str]]], clean.redis.xrange(ACHIEVEMENTS_STREAM))
    announced = Counter((int(f["userId"]), f["badge"], int(f["tier"])) for _, f in entries)
    assert all(n == 1 for n in announced.values()), announced  # never twice, whatever reruns and late events
    for user in everyone:
        for badge, tier, _, _ in _earned(UserInsightsService(clean).achievements(user)):
            assert announced[(user, badge, tier)] == 1, (user, badge, tier)


def test_the_oracle_of_a_small_history() -> None:
    """The oracle itself on a hand-checked history: a follow, an unfollow and a refollow across a Berlin midnight
    and the October switch; a reaction turned on twice; the creator's own reaction and an excluded user's."""
    berlin = ZoneInfo("Europe/Berlin")
    sunday = oracle.day_start(date(2026, 10, 25), berlin)  # 2026-10-24 22:00 UTC (CEST)
    monday = oracle.day_start(date(2026, 10, 26), berlin)  # 2026-10-25 23:00 UTC (CET): the day had 25 hours
    assert monday - sunday == timedelta(hours=25)
    ids = [str(uuid.UUID(int=i)) for i in range(10)]
    history = [
        E(ids[1], "User", 1, 2, 1, "Follow", 1, sunday - timedelta(hours=1)),  # Saturday 23:00 in Berlin
        E(ids[2], "User", 1, 2, 1, "Follow", -1, sunday + timedelta(hours=2)),
        E(ids[3], "User", 1, 2, 1, "Follow", 1, monday - timedelta(milliseconds=1)),  # Sunday's last millisecond
        E(ids[4], "Image", 100, 3, 1, "ReactionLike", 1, sunday),
        E(ids[5], "Image", 100, 3, 1, "ReactionLike", -1, sunday),  # the same instant: the higher id is later
        E(ids[6], "Image", 100, 3, 1, "ReactionLike", 1, monday),
        E(ids[7], "Image", 100, 1, 1, "ReactionHeart", 1, monday),  # the creator's own: never counts
        E(ids[8], "Image", 100, 4, 1, "ReactionCry", 1, monday),  # excluded
        E(ids[9], "Image", 100, 2, 1, "Download", 5, monday + timedelta(hours=1)),
    ]
    view = Insights(history + history[:2], {4}, datetime(2026, 11, 1, tzinfo=UTC))
    growth = view.growth(1, date(2026, 10, 24), date(2026, 10, 26), "Europe/Berlin")["days"]
    assert [(d["gained"], d["lost"], d["followers"]) for d in growth] == [(1, 0, 1), (0, 0, 1), (0, 0, 1)]
    cohorts = view.retention(1, 2, "Europe/Berlin")["cohorts"]
    assert cohorts == [
        {"week": "2026-10-19", "size": 1, "retained": [1, 1]},  # on again before the week's end
        {"week": "2026-10-26", "size": 0, "retained": [0]},
    ]
    audience = view.audience(1, date(2026, 10, 25), date(2026, 10, 26), "Europe/Berlin")
    assert audience["reactions"] == {"followers": 0, "nonFollowers": 2}
    assert audience["downloads"] == {"followers": 5, "nonFollowers": 0}
    activity = view.activity(1, 28, "Europe/Berlin")
    assert activity["bestHours"] == [
        {"weekday": 0, "hour": 1, "count": 5},
        {"weekday": 0, "hour": 0, "count": 1},
        {"weekday": 6, "hour": 0, "count": 1},
    ]
    earned = oracle.achievements(history, {4}, 1, datetime(2026, 11, 1, tzinfo=UTC))["earned"]
    assert {(a["badge"], a["tier"], a["eventId"]) for a in earned} == {
        ("followers", 1, ids[1]),
        ("reactions", 1, ids[4]),
        ("downloads", 1, ids[9]),
    }
