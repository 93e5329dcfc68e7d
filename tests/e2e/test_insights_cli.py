"""The insights and jobs commands as a user runs them: JSON on stdout, exit code 2 and one line on bad input.

Given a fresh data directory with the schema (embedded defaults, no stack running), when ``python -m app insights
...`` and ``python -m app jobs run ...`` run in a subprocess, then good requests print their JSON answer (an
unknown user answers zeros) and bad ones exit 2 with one clear line on stderr and nothing on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_cli_json import _run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("insights-cli")
    done = _run(path, "migrate")
    assert done.returncode == 0, done.stderr
    return path


def test_an_unknown_user_answers_zeros_in_every_read_time_insight(data: Path) -> None:
    growth = json.loads(
        _run(data, "insights", "growth", "42", "--from", "2026-01-01", "--to", "2026-01-03", "--json").stdout
    )
    assert growth == {
        "userId": 42,
        "days": [{"day": f"2026-01-0{d}", "gained": 0, "lost": 0, "followers": 0} for d in (1, 2, 3)],
    }
    retention = json.loads(_run(data, "insights", "retention", "42", "--weeks", "3", "--json").stdout)
    assert [c["size"] for c in retention["cohorts"]] == [0, 0, 0]
    assert [len(c["retained"]) for c in retention["cohorts"]] == [3, 2, 1]
    activity = json.loads(_run(data, "insights", "activity", "42", "--tz", "Asia/Kolkata", "--json").stdout)
    assert activity["grid"] == [[0] * 24] * 7 and activity["bestHours"] == [] and activity["tz"] == "Asia/Kolkata"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("growth", "7", "--from", "2026-02-01", "--to", "2026-01-01"), "before --from"),
        (("growth", "7", "--from", "2024-01-01", "--to", "2026-01-01"), "at most 400"),
        (("audience", "7", "--from", "2026-01-01", "--to", "2026-13-01"), "not a day"),
        (("activity", "7", "--tz", "Mars/Olympus_Mons"), "unknown time zone"),
        (("retention", "0"), "out of range"),
        (("retention", "7", "--weeks", "0"), "--weeks"),
    ],
)
def test_bad_input_exits_2_with_one_line(data: Path, args: tuple[str, ...], says: str) -> None:
    done = _run(data, "insights", *args, "--json")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == "" and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_jobs_run_runs_a_beat_job_now_and_refuses_an_unknown_one(data: Path) -> None:
    done = _run(data, "jobs", "run", "recompute_ranks", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["job"] == "recompute_ranks"
    unknown = _run(data, "jobs", "run", "no_such_job")
    assert unknown.returncode == 2 and "unknown job" in unknown.stderr
