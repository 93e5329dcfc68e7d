"""The ingest benchmark's cost per event: reading ``/proc`` stat lines, process trees, deltas and scaling."""

from __future__ import annotations

import math
import os

from bench.cost import (
    PhaseCost,
    ProcStat,
    Snapshot,
    command_delta,
    cost_rows,
    cpu_text,
    delta,
    descendants,
    less_own,
    parse_stat,
    per_thousand,
    read_stats,
    tree_seconds,
)

# pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
STAT = "4242 (celery worker) (x) S 17 4242 4242 0 -1 4194560 10 0 0 0 150 50 30 10 20 0 5 0 100 0 0"


def test_a_stat_line_with_spaces_and_parentheses_in_its_name_is_parsed_after_the_last_parenthesis() -> None:
    stat = parse_stat(STAT, ticks=100)
    assert (stat.pid, stat.ppid) == (4242, 17)
    assert math.isclose(stat.own_s, 2.0)  # (150 + 50) / 100
    assert math.isclose(stat.reaped_s, 0.4)  # (30 + 10) / 100


def test_this_process_is_read_from_proc() -> None:
    stats = read_stats()
    assert stats[os.getpid()].ppid == os.getppid()
    assert stats[os.getpid()].own_s > 0


def test_descendants_are_the_root_and_everything_below_it() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 12, 20: 1, 30: 99}
    assert descendants(10, parents) == {10, 11, 12, 13}
    assert descendants(30, parents) == {30}


def test_a_tree_counts_own_and_reaped_time_of_live_processes_once_each() -> None:
    stats = {
        10: ProcStat(10, 1, own_s=1.0, reaped_s=0.5),  # a prefork parent that reaped a child worth 0.5 s
        11: ProcStat(11, 10, own_s=2.0, reaped_s=0.0),
        12: ProcStat(12, 10, own_s=3.0, reaped_s=0.0),
        20: ProcStat(20, 1, own_s=7.0, reaped_s=0.0),  # another tree
    }
    assert math.isclose(tree_seconds([10], stats), 6.5)
    assert math.isclose(tree_seconds([10, 20], stats), 13.5)
    assert tree_seconds([99], stats) == 0  # gone


def test_a_child_reaped_between_snapshots_loses_none_of_its_time() -> None:
    before = {10: ProcStat(10, 1, 1.0, 0.0), 11: ProcStat(11, 10, 2.0, 0.0)}
    after = {10: ProcStat(10, 1, 1.5, 2.5)}  # child 11 ran 0.5 s more, exited, and was reaped
    assert math.isclose(tree_seconds([10], after) - tree_seconds([10], before), 1.0)


def test_deltas_and_per_thousand() -> None:
    assert delta({"worker": 1.0, "redis": 0.5}, {"worker": 3.0, "redis": 0.75, "beat": 0.25}) == {
        "worker": 2.0,
        "redis": 0.25,
        "beat": 0.25,
    }
    assert per_thousand(1.5, 3000) == 0.5
    assert math.isnan(per_thousand(1.0, 0))


def test_command_deltas_leave_out_what_did_not_run_and_what_the_bench_sent() -> None:
    changed = command_delta({"lpush": 5, "get": 2}, {"lpush": 15, "get": 2, "xadd": 4})
    assert changed == {"lpush": 10, "xadd": 4}
    assert less_own({"lpush": 10, "llen": 3, "hget": 2}, {"llen": 5, "hget": 1}) == {"lpush": 10, "hget": 1}


def test_a_phase_cost_is_per_thousand_events_per_process_and_per_message_for_redis() -> None:
    before = Snapshot({"worker": 10.0, "redis": 1.0}, {"lpush": 0, "llen": 0}, 100.0, 50, {"llen": 2})
    after = Snapshot(
        {"worker": 13.0, "redis": 2.5}, {"lpush": 1000, "llen": 30, "evalsha": 2000}, 5100.0, 1050, {"llen": 32}
    )
    cost = PhaseCost.between(before, after, messages=1000)
    f = cost.figures("mix")
    assert f["mix_events"] == 1000
    assert f["mix_cpu_s_per_1k_events_worker"] == 3.0
    assert f["mix_cpu_s_per_1k_events_redis"] == 1.5
    assert f["mix_cpu_s_per_1k_events_total"] == 4.5
    assert f["mix_clickhouse_rows_per_event"] == 5.0
    assert f["mix_redis_commands_per_message"] == 3.0  # the 30 polls left out
    rows = cost_rows("(b)", f, "mix", ("worker", "clickhouse", "redis"))
    assert rows[0][1].startswith("4.50 CPU s")
    assert rows[0][2] == "worker 3.00 · redis 1.50"
    assert f["mix_redis_evalsha_per_message"] == 2.0
    assert cost_rows("(b)", f, "mix", ("worker",), "engine inside")[0][2] == "worker 3.00 (engine inside)"
    assert rows[1][1] == "5.00 rows"
    assert rows[2][2].startswith("3.00 / event")  # 3,000 commands, 1,000 events


def test_cpu_below_a_tenth_keeps_three_decimals() -> None:
    assert (cpu_text(0.0612), cpu_text(2.254), cpu_text(float("nan"))) == ("0.061", "2.25", "n/a")


def test_rows_not_measured_show_as_such() -> None:
    snap = Snapshot({}, {}, None, 0, {})
    f = PhaseCost.between(snap, Snapshot({}, {}, None, 10, {}), messages=10).figures("x")
    assert math.isnan(f["x_clickhouse_rows_per_event"])
    assert cost_rows("x", f, "x", ())[1][1] == "n/a"
