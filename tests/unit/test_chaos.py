"""The chaos soak's own logic, without its stack: the fault schedule, recovery and pause figures, what fails a run,
and the producer messages the oracle reads."""

from __future__ import annotations

import random
from collections import Counter

from app.core.events import derive_event_id
from bench.chaos import Config, Probe, Run, _longest_pause, _recovery, _schedule
from bench.chaos_check import attribute_losses, failures
from bench.chaos_faults import KINDS, Fault
from bench.oracle import events_of


def test_the_schedule_has_every_kind_as_often_as_asked_inside_the_run() -> None:
    cfg = Config(faults_per_kind=40)
    schedule = _schedule(cfg, random.Random(7), duration_s=1200)
    assert Counter(kind for _, kind in schedule) == dict.fromkeys(KINDS, 40)
    times = [at for at, _ in schedule]
    assert times == sorted(times) and 10 <= times[0] and times[-1] <= 1080
    assert schedule == _schedule(cfg, random.Random(7), duration_s=1200)  # the seed gives the schedule


def test_recovery_is_from_a_faults_end_to_the_first_later_probe_in_clickhouse() -> None:
    run = Run()
    run.probes = [Probe("a", acked=1.0, visible=1.5), Probe("b", acked=5.0, visible=9.0), Probe("c", 6.0, 6.4)]
    run.faults = [Fault("stop_clickhouse", started=2.0, ended=4.0), Fault("kill_beat", 5.5, 5.8)]
    got = _recovery(run)
    assert got["stop_clickhouse"] == {"n": 1, "median_s": 5.0, "max_s": 5.0}  # probe b: sent after, seen at 9
    assert abs(got["kill_beat"]["max_s"] - 0.6) < 1e-9  # probe c
    assert _longest_pause(run) == 9.0 - 6.4


def test_a_run_fails_on_any_loss_double_count_or_wrong_value() -> None:
    clean = dict.fromkeys(
        (
            "events_lost",
            "events_stored_twice",
            "metric_values_lost",
            "metric_values_counted_twice",
            "wrong_computed_values",
            "wrong_cached_values",
            "wrong_cached_reactions",
        ),
        0,
    )
    assert failures({**clean, "dead_letters": 3}) == []
    assert failures({**clean, "wrong_cached_reactions": 2}) == ["wrong_cached_reactions=2"]


def test_a_reaction_message_is_one_event_per_kind_with_the_contracts_ids() -> None:
    message = {
        "type": "set_reaction",
        "user_id": 3,
        "image_id": 10,
        "reactions": 5,
        "event_id": "6f1c4d0e-3f0a-4d7e-9a53-0c3e3e3b9a11",
        "occurred_at": "2026-12-01T00:00:00+00:00",
    }
    events = {e.metric_type: e for e in events_of([message])}
    assert {m: e.value for m, e in events.items()} == {
        "ReactionLike": 1,
        "ReactionHeart": -1,
        "ReactionLaugh": 1,
        "ReactionCry": -1,
    }
    assert events["ReactionLike"].event_id == str(derive_event_id(message["event_id"], "ReactionLike"))
    assert all(e.owner_id == 0 and e.entity_id == 10 and e.user_id == 3 for e in events.values())


def test_a_lost_event_is_reported_with_its_message_and_the_faults_around_its_ack() -> None:
    follow = {
        "type": "record_follow",
        "follower_id": 2,
        "user_id": 1,
        "event_id": "f1",
        "_acked": 130.0,
        "occurred_at": "2026-12-01T00:00:00+00:00",
    }
    kept = {**follow, "event_id": "f2", "_acked": 131.0}
    faults = [
        Fault("kill_worker", started=125.0, ended=126.0),  # 5 s before the ack: a suspect
        Fault("broker_blip", started=90.0, ended=100.0),  # over 15 s before: not
        Fault("stop_clickhouse", started=134.0, ended=144.0),  # 4 s after: a suspect
    ]
    got = attribute_losses({"lost_event_ids": ["f1"]}, [follow, kept], faults, started=100.0)
    assert got == [
        {
            "task": "record_follow",
            "acked_s": 30.0,
            "events": 1,
            "faults_near": ["kill_worker 25.0-26.0 s", "stop_clickhouse 34.0-44.0 s"],
        }
    ]
