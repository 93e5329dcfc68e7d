"""The monitoring files against a real Prometheus scraping a running stack.

The stack: a ClickHouse server of this module's own (so that a test can stop it), a worker (thread pool, its
exporter on a free port), beat with every job every 2 s, and Flower, on Redis databases of their own with Redis as
the broker (the broker age metric needs it). Prometheus (Debian's ``prometheus``) scrapes the worker's exporter and
Flower every second and evaluates ``deploy/monitoring/rules.yml`` every second.

Without the ``prometheus`` binary these tests skip, except in CI (``CI`` or ``USERMETRICS_CI`` set), where they fail.
``PROMETHEUS_ALERTS_SCREENSHOT=path.png`` (with chromium installed) saves Prometheus's alerts page while the fault
test's alerts are active: the picture in docs/operations.md.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml
from celery import Celery

from app.caches.metrics_cache import metrics_key
from app.client import EventProducer
from app.core import constants as c
from app.core.paths import REPO
from app.core.settings import Settings
from app.local import clickhouse_server, process
from app.local.clickhouse_server import ServerPaths
from app.read.metrics_service import UserMetricsQueryService
from app.stores.runtime import Runtime
from tasks.config import celery_config
from tests.ci import missing_tool
from tests.e2e.test_multiprocess import CELERY, purge
from tests.stack import BASE_REDIS_URL, ROOT, process_env, wait_until, with_db
from tests.unit.test_monitoring import RULES, dashboard_expressions

pytestmark = pytest.mark.e2e
TICK_S = 2  # every beat job's interval here
AUTH = ("ops", "s3cret")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], Any], what: str, timeout_s: float) -> None:
    """``wait_until``, with a service that does not answer yet (Prometheus, Flower starting) counting as not yet."""

    def holds() -> Any:
        try:
            return check()
        except requests.RequestException:
            return False

    wait_until(holds, what, timeout_s)


def _prometheus() -> str:
    found = shutil.which("prometheus")
    if found is None:
        missing_tool("prometheus is not installed (Debian: apt-get install prometheus)")
    return found


@dataclass
class Monitored:
    env: dict[str, str]
    rt: Runtime
    app: Celery
    clickhouse: ServerPaths
    tmp: Path
    prometheus_url: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], cwd: Path = REPO) -> None:
        log = open(ROOT / f"prometheus-{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(  # noqa: S603 - our own argv
            argv, env=self.env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        process.stop(proc.pid, 30)  # the process group: SIGTERM, then SIGKILL
        proc.wait()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query through Prometheus's HTTP API; its series."""
        got = requests.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert got["status"] == "success", f"{expr}: {got}"
        return list(got["data"]["result"])

    def active(self, alert: str, **labels: str) -> set[str]:
        """States (``pending``, ``firing``) of the alert's active instances with these labels."""
        got = requests.get(f"{self.prometheus_url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return {
            a["state"]
            for a in got
            if a["labels"]["alertname"] == alert and all(a["labels"].get(k) == v for k, v in labels.items())
        }

    def wait_active(self, alert: str, timeout_s: float = 30, **labels: str) -> set[str]:
        eventually(lambda: self.active(alert, **labels), f"{alert} {labels} to be pending or firing", timeout_s)
        return self.active(alert, **labels)


def _beat_argv(tmp: Path) -> list[str]:
    return [*CELERY, "beat", "-s", str(tmp / "beat-schedule"), "--pidfile=", "--loglevel", "WARNING"]


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    binary = _prometheus()
    if not (clickhouse_server.LIB_DIR.joinpath("libchdb.so").exists() or shutil.which("npm")):
        pytest.skip("neither the ClickHouse server library nor npm to fetch it")
    tmp = tmp_path_factory.mktemp("prometheus")
    paths = ServerPaths(tmp / "clickhouse")
    base = clickhouse_server.start(paths)
    cache_url, broker_url = with_db(BASE_REDIS_URL, 12), with_db(BASE_REDIS_URL, 13)
    for url in (cache_url, broker_url):
        redis.Redis.from_url(url).flushdb()
    purge(broker_url)
    metrics_port, flower_port, prometheus_port = _free_port(), _free_port(), _free_port()
    env = process_env("unused", drop=("CLICKHOUSE_URL",))
    env.update(
        CLICKHOUSE_URL=f"{base}/monitored",
        CLICKHOUSE_TIMEOUT_S="2",
        REDIS_URL=cache_url,
        CELERY_BROKER_URL=broker_url,
        DATA_DIR=str(tmp / "data"),
        LOG_LEVEL="WARNING",
        METRICS_PORT=str(metrics_port),
        METRICS_ADDRESS="127.0.0.1",
        FLOWER_PORT=str(flower_port),
        FLOWER_BASIC_AUTH=":".join(AUTH),
        **{
            name: str(TICK_S)
            for name in (
                "ENGAGEMENT_INTERVAL_S",
                "RANKS_INTERVAL_S",
                "REFRESH_INTERVAL_S",
                "RECONCILE_INTERVAL_S",
                "SNAPSHOT_INTERVAL_S",
                "PEERS_INTERVAL_S",
                "ACHIEVEMENTS_INTERVAL_S",
                "BUFFER_CHECK_INTERVAL_S",
            )
        },
    )
    cfg = Settings(
        CLICKHOUSE_URL=env["CLICKHOUSE_URL"],
        REDIS_URL=cache_url,
        CELERY_BROKER_URL=broker_url,
        DATA_DIR=env["DATA_DIR"],
    )
    app = Celery("prometheus-producer")
    app.config_from_object(celery_config(cfg))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [RULES.name],  # a copy beside the configuration: Prometheus names it as it was given
        "scrape_configs": [
            {"job_name": "usermetrics", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]},
            {
                "job_name": "flower",
                "basic_auth": {"username": AUTH[0], "password": AUTH[1]},
                "static_configs": [{"targets": [f"127.0.0.1:{flower_port}"]}],
            },
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(RULES, tmp / RULES.name)
    m = Monitored(env, Runtime(cfg), app, paths, tmp, f"http://127.0.0.1:{prometheus_port}")
    try:
        m.start(
            "worker",
            [*CELERY, "worker", "-Q", "events,maintenance,reads", "--pool", "threads"]
            + ["--concurrency", "4", "--hostname", "monitored@%h", "--loglevel", "WARNING"],
        )
        m.start("flower", [*CELERY, "flower", f"--port={flower_port}", "--address=127.0.0.1"])
        m.start("beat", _beat_argv(tmp))
        m.start(
            "prometheus",
            [
                binary,
                "--config.file=prometheus.yml",
                "--storage.tsdb.path=tsdb",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                "--log.level=warn",
            ],
            cwd=tmp,
        )
        yield m
    finally:
        for name in list(m.procs):
            m.stop(name)
        app.close()
        m.rt.close()
        clickhouse_server.stop(paths)


def _traffic(m: Monitored) -> None:
    """Follows through the broker, and reads of their users: hits and misses, cached hashes to reconcile."""
    producer = EventProducer(m.app)
    for i in range(10):
        producer.record_follow(100 + i, 1 + i % 3)
    service = UserMetricsQueryService(m.rt)
    wait_until(lambda: service.get_user_metrics([1])[1].follower_count == 4, "the follows to land", 60)
    m.rt.redis.delete(metrics_key(2))
    service.get_user_metrics([1, 2, 3])


def _every_job_succeeded(m: Monitored) -> bool:
    return len(m.query("usermetrics_job_last_success_timestamp_seconds")) == len(c.JOBS)


@pytest.fixture(scope="module")
def scraped(monitored: Monitored) -> Monitored:
    """The stack with traffic, every job succeeded once, and Prometheus holding a few scrapes of it all."""
    eventually(lambda: len(monitored.query("up == 1")) == 2, "Prometheus to scrape the exporter and Flower", 90)
    _traffic(monitored)
    eventually(lambda: _every_job_succeeded(monitored), "every beat job to succeed once", 90)
    eventually(lambda: monitored.query("flower_task_runtime_seconds_bucket"), "Flower's task runtimes", 30)
    time.sleep(3)  # rates over two scrapes at least, and the recording rules evaluated
    return monitored


COMPARISON = re.compile(r"\s(==|!=|>=|<=|>|<)\s")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def selectors(expr: str) -> list[str]:
    """Every metric selector of a PromQL expression (its name and label matchers; a range dropped), found by a small
    tokenizer that fits this project's expressions: identifiers not called as functions, not keywords, not in the
    label lists of ``by``/``on``/``without``/``ignoring``, not inside strings."""
    # Blank out strings and label lists, keeping every position, then read the spans back from the expression.
    masked = re.sub(r'"[^"]*"', lambda m: '"' + "_" * (len(m.group()) - 2) + '"', expr)
    masked = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", lambda m: " " * len(m.group()), masked)
    found = []
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?(\[[^\]]*\])?(\s*\()?", masked):
        name, matchers, _, call = match.groups()
        if call or name in KEYWORDS:
            continue
        found.append(expr[match.start(1) : match.end(2) if matchers else match.end(1)])
    return found


def test_selectors_finds_every_metric_and_nothing_else() -> None:
    expr = 'max by (queue) (rate(a_total{queue="events",x=~"1|2"}[5m])) > bool 3 * on (q) b:c:d or vector(0) < 1'
    assert selectors(expr) == ['a_total{queue="events",x=~"1|2"}', "b:c:d"]


def test_every_rule_and_dashboard_query_returns_series(scraped: Monitored) -> None:
    """Every expression of rules.yml and dashboard.json names only metrics the running stack exports.

    An alert's expression returns nothing while the stack is healthy (``x > 30`` filters every series out), and an
    ``or vector(0)`` returns something whatever its selectors match. So every expression is checked twice:
    - each of its metric selectors (range dropped) alone returns at least one series: no selector names a metric
      nothing exports, or labels no series has;
    - the expression itself returns at least one series with its comparisons made ``bool`` (``x > bool 30`` keeps
      every series, valued 0 or 1): the selectors meet, through every aggregation and vector match, in a result.
    Recording rules and dashboard queries have no comparisons and are evaluated as they are.
    """
    groups = yaml.safe_load(RULES.read_text())["groups"]
    expressions = [r["expr"] for g in groups for r in g["rules"]] + dashboard_expressions()
    empty = []
    for expr in expressions:
        for selector in selectors(expr):
            if not scraped.query(selector):
                empty.append(f"selector {selector} of {expr}")
        as_values = COMPARISON.sub(lambda m: f" {m.group(1)} bool ", expr)
        if not scraped.query(as_values):
            empty.append(f"expression {as_values}")
    assert not empty, "no series for:\n" + "\n".join(empty)


def test_faults_make_their_alerts_active(scraped: Monitored) -> None:
    m = scraped
    # Given the healthy stack: none of the alerts below is active
    for alert in ("UsermetricsCacheDrift", "UsermetricsClickHouseInsertFailed", "UsermetricsServiceDown"):
        assert not m.active(alert), alert
    assert not m.active("UsermetricsBeatJobStale", beat_job="check_event_buffer")

    # When a cached hash is wrong (kept wrong until a reconciliation has seen it), reconcile_caches finds drift
    def corrupted() -> set[str]:
        m.rt.redis.hset(metrics_key(1), "followerCount", "999")
        return m.active("UsermetricsCacheDrift")

    wait_until(corrupted, "UsermetricsCacheDrift", 30)

    # When beat stops, every job's last success ages past three intervals
    m.stop("beat")
    assert m.wait_active("UsermetricsBeatJobStale", beat_job="check_event_buffer") == {"pending"}

    # When ClickHouse stops and events keep coming, the flusher's inserts fail
    assert clickhouse_server.stop(m.clickhouse)
    producer = EventProducer(m.app)
    for i in range(5):
        producer.record_follow(200 + i, 1)
    m.wait_active("UsermetricsClickHouseInsertFailed", 60)
    # And with beat back, the jobs that need ClickHouse fail, run after run
    m.start("beat", _beat_argv(m.tmp))
    m.wait_active("UsermetricsBeatJobFailing", 60, beat_job="recompute_ranks")

    screenshot = os.environ.get("PROMETHEUS_ALERTS_SCREENSHOT")
    if screenshot:
        _screenshot(f"{m.prometheus_url}/classic/alerts", Path(screenshot))  # Debian: the classic UI

    # When the worker stops, its exporter is down and no worker is up
    m.stop("worker")
    assert m.wait_active("UsermetricsServiceDown", job="usermetrics") == {"pending"}
    assert m.wait_active("UsermetricsNoWorkerUp") == {"pending"}


def _screenshot(url: str, out: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser is not None, "PROMETHEUS_ALERTS_SCREENSHOT needs chromium"
    subprocess.run(  # noqa: S603 - our own argv
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--virtual-time-budget=5000",
            f"--screenshot={out}",
            "--window-size=1280,900",
            url,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
