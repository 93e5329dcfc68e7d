"""docker-compose.yml, Procfile and Dockerfile, checked statically (no Docker engine needed).

Every command they run must exist in the project: `python -m app <command>` must be a CLI command, and
`celery -A <module:attr> <sub>` must name this Celery app and a real Celery sub-command on known queues.
"""

from __future__ import annotations

import importlib
import shlex

import pytest
import typer
import yaml

from app.cli import cli
from app.core import constants as c
from app.core.paths import REPO

CLI_COMMANDS = set(typer.main.get_command(cli).commands)  # type: ignore[attr-defined]
CELERY_SUBCOMMANDS = {"worker", "beat", "flower", "inspect"}


ALL_QUEUES = {c.EVENTS_QUEUE, c.MAINTENANCE_QUEUE, c.READS_QUEUE}


def check_command(argv: list[str]) -> set[str]:
    """Check one command; returns the queues it consumes (a worker) or an empty set."""
    if argv[:3] == ["python", "-m", "app"]:
        assert argv[3] in CLI_COMMANDS, f"`python -m app {argv[3]}` is not a CLI command"
        return set()
    assert argv[0] == "celery", f"unexpected program {argv[0]!r}"
    assert argv[1] == "-A"
    module, attr = argv[2].split(":")
    assert getattr(importlib.import_module(module), attr).main == "usermetrics"
    assert argv[3] in CELERY_SUBCOMMANDS
    if "-Q" in argv:
        queues = set(argv[argv.index("-Q") + 1].split(","))
        assert queues <= ALL_QUEUES
        return queues
    return set()


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_every_service_with_healthchecks_and_volumes(compose) -> None:  # type: ignore[no-untyped-def]
    services = compose["services"]
    assert set(services) >= {"clickhouse", "redis", "postgres", "migrate", "worker", "beat", "flower"}
    for name in ("clickhouse", "redis", "postgres", "worker", "flower"):
        assert "healthcheck" in services[name], name
    for name in ("clickhouse", "redis", "postgres"):
        assert services[name]["volumes"], name
        volume = services[name]["volumes"][0].split(":")[0]
        assert volume in compose["volumes"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"
    for name in ("worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_commands_exist_in_the_project(compose) -> None:  # type: ignore[no-untyped-def]
    checked = 0
    consumed: set[str] = set()
    for svc in compose["services"].values():
        if svc.get("build") != ".":
            continue
        command = svc["command"]
        consumed |= check_command(command if isinstance(command, list) else shlex.split(command))
        checked += 1
        health = svc.get("healthcheck", {}).get("test")
        if health and health[0] == "CMD-SHELL":
            check_command(shlex.split(health[1]))
    assert checked == 5 and consumed == ALL_QUEUES  # every queue has a worker


def test_compose_secrets_come_from_the_environment(compose) -> None:  # type: ignore[no-untyped-def]
    flower_env = compose["services"]["flower"]["environment"]
    assert flower_env["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert flower_env["APP_ENV"] == "prod"
    text = (REPO / "docker-compose.yml").read_text()
    for var in ("CLICKHOUSE_PASSWORD", "POSTGRES_PASSWORD"):
        assert f"${{{var}:?" in text
    env = compose["services"]["worker"]["environment"]
    for var in ("CLICKHOUSE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL"):
        assert var in env


def test_procfile_commands_exist_in_the_project() -> None:
    roles = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip():
            role, command = line.split(":", 1)
            roles[role] = shlex.split(command)
    assert {"worker", "maintenance", "beat", "flower"} <= set(roles)
    consumed: set[str] = set()
    for argv in roles.values():
        consumed |= check_command(argv)
    assert consumed == ALL_QUEUES


def test_dockerfile_copies_what_the_commands_need() -> None:
    text = (REPO / "Dockerfile").read_text()
    for path in ("app", "tasks", "sql", "uv.lock", "pyproject.toml"):
        assert path in text
        assert (REPO / path).exists()
    assert "--frozen" in text
