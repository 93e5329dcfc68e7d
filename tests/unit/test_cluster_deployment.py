"""docker-compose.cluster.yml and its configuration under deploy/cluster, checked statically (no Docker engine needed).

The compose file, the ClickHouse server fragments (the cluster ``usermetrics``, the Keeper hosts, one macros file per
node) and the Keeper configuration must agree with each other: every host one of them names is a service of the
other, the four nodes cover two shards of two replicas exactly once, and the application's environment points at
all of them. Commands are checked as in test_deployment_files.py: each one must exist in the project.
"""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.core.constants import CLICKHOUSE_SERVER_VERSION
from app.core.paths import REPO
from app.core.settings import Settings
from tests.unit.test_deployment_files import ALL_QUEUES, check_command

COMPOSE_FILE = REPO / "docker-compose.cluster.yml"
CONFIG_DIR = REPO / "deploy" / "cluster"
CLUSTER = "usermetrics"
CH_NODES = {"ch-s1r1": ("01", 1), "ch-s1r2": ("01", 2), "ch-s2r1": ("02", 1), "ch-s2r2": ("02", 2)}
REDIS_NODES = [f"redis-{i}" for i in range(1, 7)]
CH_CONFIG_D = "/etc/clickhouse-server/config.d/"
# ${NAME:?message}: compose refuses to start while NAME is unset or empty.
REQUIRED_VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*):\?[^}]*\}")
SECRET_NAME = re.compile(r"PASSWORD|PASS$|SECRET|AUTH|TOKEN|KEY$")

Service = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    return compose["services"]  # type: ignore[no-any-return]


def app_services(services: dict[str, Service]) -> dict[str, Service]:
    """The services that run this project's image (built from the Dockerfile)."""
    return {name: svc for name, svc in services.items() if svc.get("build") == "."}


def depends_on(svc: Service) -> dict[str, str]:
    """Service name -> condition, for the list and the mapping forms of depends_on."""
    deps = svc.get("depends_on", {})
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def bind_mounts(svc: Service) -> dict[str, Path]:
    """Container path -> file of this repository, for the service's ./ bind mounts."""
    out = {}
    for volume in svc.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = REPO / source
    return out


def named_volumes(svc: Service) -> list[str]:
    return [v.split(":")[0] for v in svc.get("volumes", []) if not v.startswith(("./", "/"))]


def xml_root(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "clickhouse", path
    return root


def text(element: ET.Element | None) -> str:
    assert element is not None and element.text is not None
    return element.text.strip()


def without_secrets(value: str) -> str:
    """The value with each ${NAME:?...} replaced by a placeholder (its "?" would otherwise start a URL's query)."""
    return REQUIRED_VAR.sub("secret", value)


def macros_file(svc: Service) -> Path:
    return bind_mounts(svc)[CH_CONFIG_D + "macros.xml"]


# The file as a whole.


def test_every_config_file_parses() -> None:
    files = sorted(CONFIG_DIR.rglob("*.xml"))
    assert {p.relative_to(CONFIG_DIR).as_posix() for p in files} >= {
        "clickhouse/cluster.xml",
        "keeper/keeper.xml",
        *(f"clickhouse/macros-{node.removeprefix('ch-')}.xml" for node in CH_NODES),
    }
    for path in files:
        xml_root(path)


def test_compose_has_every_service(services: dict[str, Service]) -> None:
    expected = {"keeper-1", "keeper-2", "keeper-3", *CH_NODES, *REDIS_NODES, "redis-cluster-create", "rabbitmq"}
    expected |= {"migrate", "worker", "worker-maintenance", "beat", "flower"}
    assert set(services) >= expected, sorted(expected - set(services))


def test_every_dependency_is_a_service_that_can_meet_its_condition(services: dict[str, Service]) -> None:
    for name, svc in services.items():
        for dep, condition in depends_on(svc).items():
            assert dep in services, f"{name} depends on {dep}, which is not a service"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{name} waits for {dep} to finish; it is restarted"


def test_every_stateful_service_has_its_own_declared_volume(
    compose: dict[str, Any], services: dict[str, Service]
) -> None:
    stateful = ["keeper-1", "keeper-2", "keeper-3", *CH_NODES, *REDIS_NODES, "rabbitmq"]
    used: list[str] = []
    for name in stateful:
        volumes = named_volumes(services[name])
        assert volumes, f"{name} keeps its data in no volume"
        used += volumes
    assert len(used) == len(set(used)), "two services share a data volume"
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        assert set(named_volumes(svc)) <= declared, name
        for target, path in bind_mounts(svc).items():
            assert path.is_file(), f"{name} mounts {path} at {target}: no such file"


def test_every_service_but_the_one_shots_restarts_and_has_a_healthcheck(services: dict[str, Service]) -> None:
    one_shots = {"migrate", "redis-cluster-create"}
    for name, svc in services.items():
        if name in one_shots:
            assert svc["restart"] == "no", name
        else:
            assert svc["restart"] == "unless-stopped", name
            if name not in ("beat", "worker-maintenance"):  # as in docker-compose.yml
                assert "healthcheck" in svc, name


# ClickHouse and Keeper.


def test_the_four_nodes_mount_the_cluster_config_and_their_own_macros(services: dict[str, Service]) -> None:
    pairs = []
    for node, (shard, replica) in CH_NODES.items():
        svc = services[node]
        assert svc["image"] == f"clickhouse/clickhouse-server:{CLICKHOUSE_SERVER_VERSION}"
        assert svc["ulimits"]["nofile"] == {"soft": 262144, "hard": 262144}
        assert svc.get("hostname", node) == node
        mounts = bind_mounts(svc)
        assert mounts[CH_CONFIG_D + "cluster.xml"] == CONFIG_DIR / "clickhouse" / "cluster.xml", node
        root = xml_root(macros_file(svc))
        assert text(root.find("macros/cluster")) == CLUSTER, node
        assert text(root.find("macros/shard")) == shard, node
        # The replica macro is the host name: unique in the cluster, not only in the shard.
        assert text(root.find("macros/replica")) == node, node
        assert text(root.find("interserver_http_host")) == node, node
        pairs.append((shard, replica))
    assert len({macros_file(services[node]) for node in CH_NODES}) == len(CH_NODES), "two nodes share a macros file"
    assert sorted(pairs) == [("01", 1), ("01", 2), ("02", 1), ("02", 2)]


def test_remote_servers_lists_the_four_nodes_in_two_shards() -> None:
    root = xml_root(CONFIG_DIR / "clickhouse" / "cluster.xml")
    clusters = root.find("remote_servers")
    assert clusters is not None and [c.tag for c in clusters] == [CLUSTER]
    shards = clusters.findall(f"{CLUSTER}/shard")
    assert len(shards) == 2
    seen = []
    for number, shard in enumerate(shards, start=1):
        assert text(shard.find("internal_replication")) == "true"
        replicas = shard.findall("replica")
        assert len(replicas) == 2
        for replica in replicas:
            host = text(replica.find("host"))
            assert CH_NODES[host][0] == f"{number:02d}", f"{host} is listed in shard {number}, its macros say otherwise"
            assert text(replica.find("port")) == "9000"
            password = replica.find("password")
            if password is not None:  # never a literal: read from the node's environment
                assert not (password.text or "").strip() and password.get("from_env") == "CLICKHOUSE_PASSWORD"
            seen.append(host)
    assert sorted(seen) == sorted(CH_NODES)


def test_every_keeper_host_is_a_keeper_service(services: dict[str, Service]) -> None:
    cluster_xml = xml_root(CONFIG_DIR / "clickhouse" / "cluster.xml")
    keeper_xml = xml_root(CONFIG_DIR / "keeper" / "keeper.xml")
    tcp_port = text(keeper_xml.find("keeper_server/tcp_port"))
    server_id = keeper_xml.find("keeper_server/server_id")  # one file for the three nodes: the id is per service
    assert server_id is not None and server_id.get("from_env") == "KEEPER_SERVER_ID"

    zk_nodes = cluster_xml.findall("zookeeper/node")
    assert len(zk_nodes) == 3
    for zk in zk_nodes:
        host = text(zk.find("host"))
        assert host in services, f"the ClickHouse config names Keeper host {host}, which is not a service"
        assert text(zk.find("port")) == tcp_port

    raft = {
        text(s.find("hostname")): text(s.find("id"))
        for s in keeper_xml.findall("keeper_server/raft_configuration/server")
    }
    assert sorted(raft) == sorted(text(zk.find("host")) for zk in zk_nodes)
    for host, raft_id in raft.items():
        svc = services[host]
        assert svc["image"] == f"clickhouse/clickhouse-keeper:{CLICKHOUSE_SERVER_VERSION}"
        assert str(svc["environment"]["KEEPER_SERVER_ID"]) == raft_id, host
        assert bind_mounts(svc)["/etc/clickhouse-keeper/keeper_config.xml"] == CONFIG_DIR / "keeper" / "keeper.xml"
    for node in CH_NODES:
        assert {h: "service_healthy" for h in raft}.items() <= depends_on(services[node]).items(), node


# Redis Cluster and RabbitMQ.


def test_the_redis_cluster_has_six_nodes_and_a_one_shot_create(services: dict[str, Service]) -> None:
    for name in REDIS_NODES:
        argv = services[name]["command"]
        assert services[name]["image"] == "redis:7.2-alpine"
        assert argv[0] == "redis-server"
        pairs = list(zip(argv, argv[1:], strict=False))
        assert ("--cluster-enabled", "yes") in pairs, name
        assert ("--appendonly", "yes") in pairs, name
    assert not any(n.startswith("redis") and n not in REDIS_NODES + ["redis-cluster-create"] for n in services)

    create = services["redis-cluster-create"]
    assert create["restart"] == "no"
    assert depends_on(create) == {name: "service_healthy" for name in REDIS_NODES}
    command = create["command"]
    script = command if isinstance(command, str) else " ".join(command)
    lines = [line for line in script.splitlines() if "--cluster create" in line]
    assert len(lines) == 1, "one `redis-cli --cluster create` in the create service"
    argv = shlex.split(lines[0].strip())
    assert argv[:3] == ["redis-cli", "--cluster", "create"]
    assert sorted(a for a in argv if a.startswith("redis-") and ":" in a) == sorted(f"{n}:6379" for n in REDIS_NODES)
    assert argv[argv.index("--cluster-replicas") + 1] == "1"
    assert "--cluster-yes" in argv


def test_rabbitmq_takes_its_password_from_the_environment(services: dict[str, Service]) -> None:
    rabbit = services["rabbitmq"]
    assert rabbit["image"].startswith("rabbitmq:3.13")
    assert REQUIRED_VAR.fullmatch(rabbit["environment"]["RABBITMQ_DEFAULT_PASS"])


# The application.


def test_app_commands_exist_in_the_project(services: dict[str, Service]) -> None:
    consumed: set[str] = set()
    for svc in app_services(services).values():
        command = svc["command"]
        consumed |= check_command(command if isinstance(command, list) else shlex.split(command))
        health = svc.get("healthcheck", {}).get("test")
        if health and health[0] == "CMD-SHELL":
            check_command(shlex.split(health[1]))
    assert consumed == ALL_QUEUES  # every queue has a worker
    assert services["migrate"]["command"] == ["python", "-m", "app", "migrate"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    for name in ("worker", "worker-maintenance", "beat"):
        assert depends_on(services[name])["migrate"] == "service_completed_successfully", name
    migrate_deps = depends_on(services["migrate"])
    assert {node: "service_healthy" for node in CH_NODES}.items() <= migrate_deps.items()
    assert migrate_deps["redis-cluster-create"] == "service_completed_successfully"


def test_app_environment_points_at_the_cluster(services: dict[str, Service]) -> None:
    apps = app_services(services)
    assert set(apps) == {"migrate", "worker", "worker-maintenance", "beat", "flower"}
    for name, svc in apps.items():
        env = svc["environment"]
        assert env["APP_ENV"] == "prod", name
        assert env["CLICKHOUSE_CLUSTER"] == CLUSTER, name
        assert env["CLICKHOUSE_REPLICATION"] == "keeper", name

        redis = urlsplit(env["REDIS_URL"])
        assert redis.scheme == "redis+cluster" and redis.hostname in REDIS_NODES, name

        broker = urlsplit(without_secrets(env["CELERY_BROKER_URL"]))
        assert broker.scheme == "amqp" and broker.hostname == "rabbitmq", name

        urls = env["CLICKHOUSE_URL"].split(",")
        hosts = []
        for url in urls:
            assert url == url.strip(), f"{name}: whitespace around {url!r}"
            parts = urlsplit(without_secrets(url))
            assert parts.scheme == "http" and parts.port == 8123 and parts.path == "/usermetrics", url
            assert parts.username == "usermetrics" and parts.password == "secret", url
            hosts.append(str(parts.hostname))
        assert sorted(hosts) == sorted(CH_NODES), name


def test_every_app_variable_is_a_setting(services: dict[str, Service]) -> None:
    known = {field.alias for field in Settings.model_fields.values()}
    for name, svc in app_services(services).items():
        unknown = sorted(set(svc["environment"]) - known)
        assert unknown == [], f"{name} sets variables app/core/settings.py does not read: {unknown}"


def test_the_app_environment_is_valid_settings(services: dict[str, Service]) -> None:
    for name, svc in app_services(services).items():
        env = {key: without_secrets(str(value)) for key, value in svc["environment"].items()}
        try:
            Settings.model_validate(env)  # the values alone: neither this process's environment nor .env
        except ValueError as exc:
            pytest.fail(f"{name}: its environment is not valid settings: {exc}")


# Secrets.


def test_no_secret_is_written_in_the_file(services: dict[str, Service]) -> None:
    raw = COMPOSE_FILE.read_text()
    # Every interpolation is a required variable (no default a deployment could silently run with); $$ escapes a
    # dollar for the container's shell.
    for match in re.finditer(r"(?<!\$)\$\{[^}]*\}", raw.replace("$$", "")):
        assert REQUIRED_VAR.fullmatch(match.group()), f"{match.group()}: use ${{NAME:?message}}"
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_VAR.fullmatch(str(value)), f"{name}: {key} must come from the environment"
            for url in str(value).split(","):
                if "://" in url and "@" in url:
                    userinfo = url.split("://", 1)[1].rsplit("@", 1)[0]
                    password = userinfo.split(":", 1)[1] if ":" in userinfo else ""
                    assert password == "" or REQUIRED_VAR.fullmatch(password), f"{name}: {key} has a literal password"
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    for var in ("CLICKHOUSE_PASSWORD", "RABBITMQ_PASSWORD", "FLOWER_BASIC_AUTH"):
        assert f"${{{var}:?" in raw
    header = raw.split("\n\n", 1)[0]
    assert "docker compose -f docker-compose.cluster.yml up -d" in header
    for var in ("CLICKHOUSE_PASSWORD", "RABBITMQ_PASSWORD", "FLOWER_BASIC_AUTH"):
        assert var in header, f"the header does not say {var} must be set"


def test_no_secret_is_written_in_the_config_files() -> None:
    for path in CONFIG_DIR.rglob("*.xml"):
        for element in xml_root(path).iter():
            if element.tag in ("password", "secret", "password_sha256_hex"):
                assert not (element.text or "").strip() and element.get("from_env"), f"{path}: literal {element.tag}"
