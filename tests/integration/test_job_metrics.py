"""Beat job health in the worker's exporter: after a job runs, fails or is skipped, its counters, last success,
last duration, interval and next due time are exported (read through ``prometheus_client``'s own exposition,
as Prometheus scrapes it). The jobs are the real ones on real Redis and ClickHouse; the failure is the real engine
refusing every query for lack of memory."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.core import constants as c
from app.jobs import registry
from app.jobs.engagement import recompute_engagement
from app.jobs.ranks import recompute_ranks
from app.jobs.run import run_job
from app.ops.exporter import StatsCollector
from app.stores.runtime import Runtime
from tests.integration.test_faults import clickhouse_out_of_memory

HOUR_S = 3600.0  # one tick for the whole test: a second run in it is skipped by the slot


def scrape(rt: Runtime) -> dict[tuple[str, str], float]:
    """``(sample name, beat_job) -> value`` of every per-job sample, from the exporter's text exposition."""
    reg = CollectorRegistry()
    reg.register(StatsCollector(rt))
    found = {}
    for family in text_string_to_metric_families(generate_latest(reg).decode()):
        for sample in family.samples:
            if "beat_job" in sample.labels:
                found[(sample.name, sample.labels["beat_job"])] = sample.value
    return found


def test_every_beat_job_is_exported_with_its_interval_before_it_ever_ran(clean: Runtime) -> None:
    got = scrape(clean)
    for job, interval_s in registry.intervals(clean.settings).items():
        assert got[("usermetrics_job_interval_seconds", job)] == interval_s
        for counter in ("runs", "failures", "skipped"):
            assert got[(f"usermetrics_job_{counter}_total", job)] == 0
        # Never run: no success, duration or due time to report (absent, not a made-up 0)
        assert ("usermetrics_job_last_success_timestamp_seconds", job) not in got
        assert ("usermetrics_job_next_due_timestamp_seconds", job) not in got
    assert set(registry.intervals(clean.settings)) == set(c.JOBS)


def test_a_run_a_skip_and_a_failure_are_exported(clean: Runtime) -> None:
    job = c.RECOMPUTE_RANKS
    # When the job runs once in its tick
    before = time.time()
    run_job(clean, job, HOUR_S, recompute_ranks)
    after = time.time()
    got = scrape(clean)
    # Then a run, its duration, its success and when beat should start it next are exported
    assert got[("usermetrics_job_runs_total", job)] == 1
    assert before <= got[("usermetrics_job_last_success_timestamp_seconds", job)] <= after + 0.01
    assert 0 <= got[("usermetrics_job_last_duration_seconds", job)] <= after - before + 0.01
    every = registry.intervals(clean.settings)  # the intervals beat schedules (settings), not the tick above
    assert before + every[job] - 0.01 <= got[("usermetrics_job_next_due_timestamp_seconds", job)] <= after + every[job]
    success = got[("usermetrics_job_last_success_timestamp_seconds", job)]

    # When beat sends the same tick again: skipped by the slot, counted, nothing else changes
    assert run_job(clean, job, HOUR_S, recompute_ranks) == {"skipped": "slot"}
    got = scrape(clean)
    assert got[("usermetrics_job_skipped_total", job)] == 1 and got[("usermetrics_job_runs_total", job)] == 1
    assert got[("usermetrics_job_last_success_timestamp_seconds", job)] == success

    # When a run fails (ClickHouse refuses every query), the failure is counted and the error goes on to the task
    with clickhouse_out_of_memory(clean):
        try:
            run_job(clean, c.RECOMPUTE_ENGAGEMENT, HOUR_S, recompute_engagement, slot=False)
        except Exception as exc:
            assert "MEMORY_LIMIT_EXCEEDED" in str(exc) or "memory" in str(exc).lower(), exc
        else:
            raise AssertionError("recompute_engagement ran although ClickHouse refused every query")
    got = scrape(clean)
    assert got[("usermetrics_job_failures_total", c.RECOMPUTE_ENGAGEMENT)] == 1
    assert got[("usermetrics_job_runs_total", c.RECOMPUTE_ENGAGEMENT)] == 0
    assert ("usermetrics_job_last_success_timestamp_seconds", c.RECOMPUTE_ENGAGEMENT) not in got
    # A failed attempt still tells when beat should start the job next
    assert (
        got[("usermetrics_job_next_due_timestamp_seconds", c.RECOMPUTE_ENGAGEMENT)]
        > time.time() + every[c.RECOMPUTE_ENGAGEMENT] - 60
    )
    assert got[("usermetrics_job_failures_total", job)] == 0  # per job


def test_the_buffer_check_is_counted_like_every_job(clean: Runtime) -> None:
    registry.run_now(clean, c.CHECK_EVENT_BUFFER)
    got = scrape(clean)
    assert got[("usermetrics_job_runs_total", c.CHECK_EVENT_BUFFER)] == 1
    assert got[("usermetrics_job_last_success_timestamp_seconds", c.CHECK_EVENT_BUFFER)] <= time.time()
    due = got[("usermetrics_job_next_due_timestamp_seconds", c.CHECK_EVENT_BUFFER)]
    assert due > time.time() + clean.settings.buffer_check_interval_s - 60
