"""A user's reactions cached as a complete set: the first miss reads every image the user reacted to, later pages
are hits (an absent image is no reaction); a heavy reactor is filled page by page; events after the set apply to
absent images; a fill that raced a dropped event is skipped; a hash lost on its own takes completeness with it. And
for any history, delivered twice and out of order, with fills read and written at any point between an event's
insert and its cache merge, every read equals the oracle."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.caches import reactions_cache
from app.caches.reactions_cache import COMPLETE, BitUpdate, ReactionSet
from app.read.reactions_service import UserReactionQueryService, all_reactions, latest_reactions
from app.stores.clickhouse import insert_events
from app.stores.runtime import Runtime
from bench.oracle import E, Oracle
from tests.integration.test_read_properties import REACTION_METRICS, to_event
from tests.properties import examples
from tests.stack import wipe_clickhouse

NOW = datetime.now(UTC).replace(microsecond=0)
USER = 7
IMAGES = (100, 101, 102, 103, 104)


def reaction(image: int, metric: str = "ReactionLike", on: bool = True, seconds_ago: int = 60) -> E:
    return E(str(uuid.uuid4()), "Image", image, USER, 9, metric, 1 if on else -1, NOW - timedelta(seconds=seconds_ago))


class Calls:
    """The read service on the real sources, each source call counted."""

    def __init__(self, rt: Runtime, max_images: int = 1000) -> None:
        self.rt, self.max_images = rt, max_images
        self.pages: list[list[int]] = []
        self.complete = 0

    def page(self, user_id: int, image_ids: Sequence[int]) -> dict[int, list[BitUpdate]]:
        self.pages.append(list(image_ids))
        return latest_reactions(self.rt.clickhouse, user_id, image_ids)

    def every(self, user_id: int) -> ReactionSet | None:
        self.complete += 1
        return all_reactions(self.rt.clickhouse, user_id, self.max_images)

    def service(self) -> UserReactionQueryService:
        return UserReactionQueryService(self.rt.redis, self.page, fills=None, complete=self.every)


def insert(rt: Runtime, *events: E) -> None:
    insert_events(rt.clickhouse, [to_event(e) for e in events])


def merge(rt: Runtime, *events: E) -> None:
    reactions_cache.merge(rt.redis, reactions_cache.updates_from_events(to_event(e) for e in events))


def test_the_first_miss_caches_the_complete_set_and_later_pages_are_hits(clean: Runtime) -> None:
    # Given a user who liked image 100 and hearted 101, then took the like back
    insert(
        clean,
        reaction(100, seconds_ago=90),
        reaction(101, "ReactionHeart"),
        reaction(100, on=False, seconds_ago=30),
    )
    calls = Calls(clean)
    service = calls.service()
    # When a page of images is read: one miss, answered from the complete set
    first = service.get_user_reactions(USER, [100, 101, 500])
    assert first == {100: 0, 101: 2, 500: 0} and first.missed == 3
    assert calls.complete == 1 and calls.pages == []
    # Then every later page is a hit, images never reacted to included
    later = service.get_user_reactions(USER, [101, 600, 700, 100])
    assert later == {101: 2, 600: 0, 700: 0, 100: 0} and later.missed == 0
    assert calls.complete == 1 and calls.pages == []
    # And the contract's hash holds only image fields; the mark lives in the versions key and expires with it
    assert set(clean.redis.hkeys(reactions_cache.flags_key(USER))) == {"100", "101"}
    assert clean.redis.hget(reactions_cache.versions_key(USER), "all") == "1"
    assert 0 < clean.redis.ttl(reactions_cache.versions_key(USER)) <= 604_800


def test_a_user_with_no_reactions_is_a_complete_empty_set(clean: Runtime) -> None:
    calls = Calls(clean)
    service = calls.service()
    assert service.get_user_reactions(USER, [1, 2]) == {1: 0, 2: 0}
    assert service.get_user_reactions(USER, [3]) == {3: 0}
    assert calls.complete == 1
    # An event afterwards lands in the set (its image is absent: known zero), and the set stays complete
    e = reaction(3, "ReactionCry", seconds_ago=1)
    insert(clean, e)
    merge(clean, e)
    assert service.get_user_reactions(USER, [3, 4]) == {3: 8, 4: 0}
    assert calls.complete == 1 and calls.pages == []


def test_a_heavy_reactor_is_filled_page_by_page_and_not_asked_again(clean: Runtime) -> None:
    insert(clean, *(reaction(i) for i in (100, 101, 102)))
    calls = Calls(clean, max_images=2)
    service = calls.service()
    assert service.get_user_reactions(USER, [100, 500]) == {100: 1, 500: 0}
    assert calls.complete == 1 and calls.pages == [[100, 500]]
    assert clean.redis.hget(reactions_cache.versions_key(USER), "all") == "x"
    # The next page's unseen image is a page miss; the complete set is not tried again while the mark lives
    assert service.get_user_reactions(USER, [100, 102]) == {100: 1, 102: 1}
    assert calls.complete == 1 and calls.pages == [[100, 500], [102]]


def test_the_engine_formats_the_complete_set_as_a_page_read_resolves_it(clean: Runtime) -> None:
    # Given images with every mix of bits: all four, one set then taken back, one of each kind
    kinds = sorted(m.value for m in reactions_cache.BIT_OF)
    insert(clean, *(reaction(100, k, seconds_ago=50 + i) for i, k in enumerate(kinds)))
    insert(clean, reaction(101, "ReactionCry", seconds_ago=40), reaction(101, "ReactionCry", on=False, seconds_ago=20))
    insert(clean, *(reaction(110 + i, k) for i, k in enumerate(kinds)))
    # When the complete set is read, its flags and fill arguments are those of the latest state per bit
    every = all_reactions(clean.clickhouse, USER, 6)
    assert every is not None
    expected = ReactionSet.of(latest_reactions(clean.clickhouse, USER, [100, 101, 110, 111, 112, 113]))
    assert every.flags == expected.flags == {100: 15, 101: 0, 110: 8, 111: 2, 112: 4, 113: 1}

    def bits(states: tuple[str, ...]) -> dict[str, set[tuple[str, str, str]]]:
        parts = [s.split("|") for s in states]
        return {p[0]: {tuple(p[i : i + 3]) for i in range(1, len(p), 3)} for p in parts}  # type: ignore[misc]

    assert bits(every.states) == bits(expected.states)
    assert all(len(s.split("|")) == 13 for s in every.states)  # all four bits of every image
    # And one image more than the cap, or a bit more than four per image allow, is a set too big
    assert all_reactions(clean.clickhouse, USER, 5) is None
    assert ReactionSet.from_json(every.to_json()) == every
    # An earlier version's worker answers with bits per image: a reader upgraded first reads it all the same
    earlier = {
        str(i): [[u.bit, u.on, u.version] for u in bits]
        for i, bits in latest_reactions(clean.clickhouse, USER, list(every.flags)).items()
    }
    assert ReactionSet.from_json(earlier) == ReactionSet.of(latest_reactions(clean.clickhouse, USER, list(every.flags)))
    assert ReactionSet.from_json(earlier).flags == every.flags


def test_one_event_on_an_absent_image_of_a_complete_set_is_applied(clean: Runtime) -> None:
    insert(clean, reaction(100))
    calls = Calls(clean)
    calls.service().get_user_reactions(USER, [100])
    # A single bit (not a full set_reaction state) on an image the set does not hold
    e = reaction(104, "ReactionLaugh", seconds_ago=5)
    insert(clean, e)
    merge(clean, e)
    assert reactions_cache.read(clean.redis, USER, [104]) == {104: 4}
    # An older event of a bit the set knows is still ignored
    old = reaction(100, on=False, seconds_ago=600)
    insert(clean, old)
    merge(clean, old)
    assert calls.service().get_user_reactions(USER, [100, 104]) == {100: 1, 104: 4}


def test_a_fill_that_raced_a_dropped_event_is_skipped(clean: Runtime) -> None:
    # Given a reader that noted the cache and read ClickHouse before an event arrived
    noted = reactions_cache.lookup(clean.redis, USER, [100]).drops
    every = all_reactions(clean.clickhouse, USER, 1000)
    assert every == ReactionSet({}, ())
    # When the event reaches ClickHouse and its one bit cannot be written to the cache (no set yet)
    e = reaction(100, "ReactionHeart", seconds_ago=1)
    insert(clean, e)
    merge(clean, e)
    assert reactions_cache.read(clean.redis, USER, [100]) == {100: None}
    # Then the reader's fill, which would hide it, is not written
    assert reactions_cache.fill(clean.redis, USER, [], COMPLETE, noted) == -1
    assert not reactions_cache.lookup(clean.redis, USER, [100]).complete
    # And the next read misses again and serves the event
    assert Calls(clean).service().get_user_reactions(USER, [100]) == {100: 2}


def test_a_hash_lost_on_its_own_or_a_forgotten_image_ends_completeness(clean: Runtime) -> None:
    insert(clean, reaction(100), reaction(101))
    calls = Calls(clean)
    service = calls.service()
    service.get_user_reactions(USER, [100])
    assert reactions_cache.lookup(clean.redis, USER, [100]).complete
    # The flags hash evicted without its versions key: absences are no longer known
    clean.redis.delete(reactions_cache.flags_key(USER))
    assert not reactions_cache.lookup(clean.redis, USER, [101]).complete
    assert service.get_user_reactions(USER, [101]) == {101: 1} and calls.complete == 2
    # Forgetting one image forgets that the set is complete
    service.cache.clear_reaction(USER, 100)
    assert not reactions_cache.lookup(clean.redis, USER, [100]).complete
    assert service.get_user_reactions(USER, [100, 101]) == {100: 1, 101: 1} and calls.complete == 3


@st.composite
def a_reaction(draw: Any) -> E:
    at = NOW - timedelta(minutes=draw(st.integers(0, 3)), seconds=draw(st.integers(0, 1)))
    on = 1 if draw(st.booleans()) else -1
    image, metric = draw(st.sampled_from(IMAGES)), draw(st.sampled_from(REACTION_METRICS))
    return E(str(draw(st.uuids())), "Image", image, USER, 9, metric, on, at)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_reads_equal_the_oracle_whatever_the_interleaving_of_events_and_fills(clean, data):  # type: ignore[no-untyped-def]
    clean.redis.flushdb()
    wipe_clickhouse(clean)
    history = data.draw(st.lists(a_reaction(), min_size=1, max_size=8))
    delivery = data.draw(st.permutations(history + data.draw(st.lists(st.sampled_from(history), max_size=4))))
    # Each delivery is two steps (insert into ClickHouse, then merge into the cache); each fill three (note the
    # cache, read ClickHouse, write). Steps of different items interleave freely; an item's own keep their order.
    fills = data.draw(st.integers(1, 3))
    items: list[list[tuple[str, int]]] = [[("insert", i), ("merge", i)] for i in range(len(delivery))]
    items += [[("note", j), ("read", j), ("write", j)] for j in range(fills)]
    order = data.draw(st.permutations([k for k, item in enumerate(items) for _ in item]))  # a uniform interleaving
    steps = [items[k].pop(0) for k in order]
    max_images = data.draw(st.sampled_from([2, 1000]))  # a heavy reactor, or a set that fits
    noted: dict[int, reactions_cache.Lookup] = {}
    read: dict[int, ReactionSet | None] = {}
    for step, i in steps:
        if step == "insert":
            insert(clean, delivery[i])
        elif step == "merge":
            merge(clean, delivery[i])
        elif step == "note":
            noted[i] = reactions_cache.lookup(clean.redis, USER, list(IMAGES))
        elif step == "read":
            read[i] = all_reactions(clean.clickhouse, USER, max_images)
        else:
            every = read[i]
            if every is not None:
                reactions_cache.fill_set(clean.redis, USER, every, noted[i].drops)
            else:
                states = latest_reactions(clean.clickhouse, USER, list(IMAGES))
                updates = [u for b in states.values() for u in b]
                reactions_cache.fill(clean.redis, USER, updates, reactions_cache.TOO_MANY, noted[i].drops)

    oracle = Oracle(now=NOW)
    oracle.apply_all(history)
    expected = {image: oracle.reactions(USER, image) for image in IMAGES}
    # What the cache holds is right wherever it answers
    cached = reactions_cache.lookup(clean.redis, USER, list(IMAGES))
    assert {i: f for i, f in cached.known().items()} == {i: expected[i] for i in cached.known()}
    # And a read through the service (misses included) equals the oracle, twice (the second from the cache)
    calls = Calls(clean, max_images)
    for _ in range(2):
        assert calls.service().get_user_reactions(USER, list(IMAGES)) == expected
