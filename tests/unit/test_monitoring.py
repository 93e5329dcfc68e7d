"""The monitoring files in ``deploy/monitoring/``, checked with Prometheus's own ``promtool`` (Debian's
``prometheus`` package) and statically: the rules parse, every alert fires and clears in its unit tests
(``rules_test.yml``), the example configuration is valid, and the Grafana dashboard is well formed with queries
promtool parses. That every expression names a metric something exports is shown against a real Prometheus
scraping a running stack (``tests/e2e/test_prometheus.py``).

Without promtool these tests skip, except in CI (``CI`` or ``USERMETRICS_CI`` set, as ``.ci/run`` does): there a
missing promtool fails them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from app.core.paths import REPO
from tests.ci import missing_tool

MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "rules.yml"
DASHBOARD = MONITORING / "dashboard.json"


def promtool() -> str:
    """Path of promtool; skips the test without it, fails it in CI."""
    found = shutil.which("promtool")
    if found is None:
        missing_tool("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def run_promtool(*args: str, cwd: Path = MONITORING) -> str:
    done = subprocess.run(  # noqa: S603 - promtool with our own arguments
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel of the dashboard, those inside collapsed rows too."""
    found = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_expressions() -> list[str]:
    return [t["expr"] for p in dashboard_panels() if p["type"] != "row" for t in p["targets"]]


def test_promtool_checks_the_rules() -> None:
    out = run_promtool("check", "rules", RULES.name)
    assert "SUCCESS" in out


def test_every_alert_fires_and_clears_in_the_rules_unit_tests() -> None:
    out = run_promtool("test", "rules", "rules_test.yml")
    assert "SUCCESS" in out
    # Each alert has a test case that expects it firing, and one evaluation that expects it cleared.
    tests = yaml.safe_load((MONITORING / "rules_test.yml").read_text())["tests"]
    cases = [case for t in tests for case in t.get("alert_rule_test", [])]
    for name in alerts():
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"no test shows {name} firing"
        assert any(not case["exp_alerts"] for case in mine), f"no test shows {name} cleared"


def test_the_example_prometheus_configuration_is_valid() -> None:
    out = run_promtool("check", "config", "prometheus.yml")
    assert "rules.yml" in out and "SUCCESS" in out


def test_the_alerts_cover_what_operators_watch() -> None:
    wanted = {
        "UsermetricsIngestLagBeforeWorker": "usermetrics_broker_oldest_message_age_seconds",
        "UsermetricsIngestLagAfterWorker": "usermetrics_buffer_oldest_pending_age_seconds",
        "UsermetricsClickHouseInsertFailed": "usermetrics_flush_failures_total",
        "UsermetricsDeadLettersGrowing": "usermetrics_dead_letters_total",
        "UsermetricsCacheDrift": "usermetrics_cache_drift_ratio",
        "UsermetricsCacheHitRatioLow": "usermetrics:cache_hit_ratio:rate5m",
        "UsermetricsBeatJobStale": "usermetrics_job_interval_seconds",
        "UsermetricsBeatJobFailing": "usermetrics_job_failures_total",
        "UsermetricsNoWorkerUp": "flower_worker_online",
        "UsermetricsServiceDown": "up{",
    }
    rules = alerts()
    for name, metric in wanted.items():
        assert metric in rules[name]["expr"], name
        assert rules[name]["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description"} <= set(rules[name]["annotations"])
    documented = (REPO / "docs" / "operations.md").read_text()
    assert all(f"`{name}`" in documented for name in rules), "every alert has a row in docs/operations.md"


def test_the_dashboard_is_well_formed() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_the_dashboard_covers_ingest_clickhouse_caches_jobs_and_workers() -> None:
    every = " ".join(dashboard_expressions())
    for metric in (
        "usermetrics:messages_ingested:rate1m",
        "usermetrics:events_ingested:rate1m",
        "usermetrics_broker_oldest_message_age_seconds",
        "usermetrics_buffer_oldest_pending_age_seconds",
        "usermetrics_broker_queue_depth",
        "usermetrics_flushes_total",
        "usermetrics_flush_failures_total",
        "usermetrics:cache_hit_ratio:rate5m",
        "usermetrics_cache_drift_ratio",
        "usermetrics_dead_letters_total",
        "usermetrics_job_last_duration_seconds",
        "usermetrics:job_since_last_success:seconds",
        "process_resident_memory_bytes",
    ):
        assert metric in every, metric


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    # promtool has no offline query check; a rules file with each query as a recording rule is parsed the same way.
    rules = [{"record": f"dashboard:query:{i}", "expr": expr} for i, expr in enumerate(dashboard_expressions())]
    (tmp_path / "dashboard_queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]}))
    out = run_promtool("check", "rules", "dashboard_queries.yml", cwd=tmp_path)
    assert f"{len(rules)} rules found" in out
