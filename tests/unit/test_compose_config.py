"""The compose files as the real tool reads them, and the images and the code agreeing.

``docker-compose config`` (Debian's docker-compose 1.29; no Docker engine needed) validates each file against the
Compose schema, resolves its anchors, merges and ``${VAR:?}`` interpolations, and prints the configuration it
would run. Checked on that output: every variable an application service gets is a setting the code reads and
makes valid settings, and the ClickHouse images are the release the code is tested with. Where the binary is
missing the tool's tests skip, except in CI (``tests/ci.py``), where they fail. The versions are also checked
without the tool: the compose files' image tags, the local server's package, against ``app.core.constants``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.core import constants as c
from app.core.paths import REPO
from app.core.settings import Settings
from app.local import clickhouse_server
from tests.ci import missing_tool

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.cluster.yml")
# Placeholders for the variables the files require (``${NAME:?message}``); URL-safe, as the files ask.
REQUIRED = {
    "CLICKHOUSE_PASSWORD": "ch-secret",
    "POSTGRES_PASSWORD": "pg-secret",
    "RABBITMQ_PASSWORD": "mq-secret",
    "FLOWER_BASIC_AUTH": "ops:flower-secret",
}
CLICKHOUSE_IMAGES = ("clickhouse/clickhouse-server", "clickhouse/clickhouse-keeper")


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        missing_tool("docker-compose is not installed (apt-get install docker-compose; no Docker engine needed)")
    return binary


def _config(name: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` on one file, with only ``env`` (and PATH) and an empty ``--env-file``: neither
    this process's environment nor a developer's .env beside the file takes part."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    argv = [_docker_compose(), "--file", str(REPO / name), "--env-file", str(empty), "config"]
    return subprocess.run(  # noqa: S603 - the tool, fixed arguments
        argv,
        env={"PATH": os.environ.get("PATH", ""), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Any]]:
    """A compose file as ``docker-compose config`` resolves it with the required variables set (once per file)."""
    seen: dict[str, dict[str, Any]] = {}

    def resolve(name: str) -> dict[str, Any]:
        if name not in seen:
            done = _config(name, tmp_path_factory.mktemp("compose"), REQUIRED)
            assert done.returncode == 0, f"docker-compose config refuses {name}: {done.stderr}"
            loaded = yaml.safe_load(done.stdout)
            assert isinstance(loaded, dict)
            seen[name] = loaded
        return seen[name]

    return resolve


def _app_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this project's image (built from the repository)."""
    return {
        name: svc
        for name, svc in config["services"].items()
        if "build" in svc and Path(str(svc["build"]["context"])).resolve() == REPO
    }


def _tag(image: str) -> str:
    return image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_docker_compose_accepts_the_file(name: str, resolved: Callable[[str], dict[str, Any]]) -> None:
    config = resolved(name)
    assert _app_services(config), f"{name}: no service runs this project's image"
    for svc_name, svc in _app_services(config).items():
        assert svc["image"] == "usermetrics:latest", svc_name


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_docker_compose_refuses_the_file_without_its_secrets(name: str, tmp_path: Path) -> None:
    missing = {k: v for k, v in REQUIRED.items() if k != "CLICKHOUSE_PASSWORD"}
    done = _config(name, tmp_path, missing)
    assert done.returncode != 0
    assert "set CLICKHOUSE_PASSWORD" in done.stderr


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_the_application_services_get_only_valid_settings(name: str, resolved: Callable[[str], dict[str, Any]]) -> None:
    known = {field.alias for field in Settings.model_fields.values()}
    for svc_name, svc in _app_services(resolved(name)).items():
        env = {key: str(value) for key, value in (svc.get("environment") or {}).items()}
        unknown = sorted(set(env) - known)
        assert unknown == [], f"{name}: {svc_name} sets variables app/core/settings.py does not read: {unknown}"
        try:
            Settings.model_validate(env)  # the values alone: neither this process's environment nor .env
        except ValueError as exc:
            pytest.fail(f"{name}: {svc_name}: its environment is not valid settings: {exc}")


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_the_resolved_clickhouse_images_are_the_tested_release(
    name: str, resolved: Callable[[str], dict[str, Any]]
) -> None:
    images = [svc["image"] for svc in resolved(name)["services"].values() if "image" in svc]
    clickhouse = [image for image in images if image.startswith(CLICKHOUSE_IMAGES)]
    assert clickhouse, f"{name} runs no ClickHouse image"
    assert {_tag(image) for image in clickhouse} == {c.CLICKHOUSE_SERVER_VERSION}, clickhouse


# Without the tool.


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_the_compose_clickhouse_tags_are_the_supported_server_release(name: str) -> None:
    text = (REPO / name).read_text()
    found = re.findall(r"image:\s*(clickhouse/clickhouse-(?:server|keeper))(?::(\S+))?", text)
    assert found, f"{name} names no ClickHouse image"
    for image, tag in found:
        assert tag == c.CLICKHOUSE_SERVER_VERSION, f"{name}: {image}:{tag or 'latest'}"


def test_the_supported_versions_are_major_minor_releases() -> None:
    # Docker Hub's clickhouse/clickhouse-server and clickhouse-keeper publish a tag per major.minor release.
    for version in (c.CLICKHOUSE_SERVER_VERSION, c.CLICKHOUSE_EMBEDDED_VERSION):
        assert re.fullmatch(r"\d{2}\.\d{1,2}", version), version


def test_the_local_server_package_is_the_supported_server_release() -> None:
    version = clickhouse_server.PACKAGE.rsplit("@", 1)[1]
    assert version.startswith(f"{c.CLICKHOUSE_SERVER_VERSION}."), clickhouse_server.PACKAGE


def test_the_deployment_page_states_the_supported_versions() -> None:
    page = (REPO / "docs" / "deployment.md").read_text()
    section = page.split("## Supported ClickHouse versions", 1)[1].split("\n## ", 1)[0]
    assert f"ClickHouse {c.CLICKHOUSE_SERVER_VERSION}" in section
    assert f"ClickHouse {c.CLICKHOUSE_EMBEDDED_VERSION}" in section
    for name in COMPOSE_FILES:
        assert name in section
