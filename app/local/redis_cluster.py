"""A local Redis Cluster for development and tests: three masters and three replicas of the machine's
``redis-server`` on loopback ports, under ``DATA_DIR/redis-cluster``.

``start`` launches the six nodes (cluster mode, AOF on, each in its own directory), joins them with
``redis-cli --cluster create --cluster-replicas 1`` and waits until every slot is served; it returns the URL the
project takes as ``REDIS_URL`` (``redis+cluster://127.0.0.1:<port>``; the client is ``app.stores.redis_store``'s).
``stop`` shuts the nodes down and removes the directory. A production cluster is the operators' own; the project
only needs its URL.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from app.core.settings import Settings
from app.local import process
from app.local.embedded_redis import redis_binary
from app.local.process import LocalServiceError

NODES = 6  # three masters, one replica each
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
SCHEME = "redis+cluster"
BUS_PORT_OFFSET = 10000


def _dir(settings: Settings) -> Path:
    return settings.data_path / "redis-cluster"


def _bus_port_free(port: int) -> bool:
    """Whether the cluster bus port of a node on ``port`` is free too."""
    return port + BUS_PORT_OFFSET <= 65535 and process.port_is_free(port + BUS_PORT_OFFSET)


def url_of(port: int) -> str:
    return f"{SCHEME}://127.0.0.1:{port}"


def running_url(settings: Settings) -> str | None:
    """The URL of the running cluster when its first node answers, else None."""
    path = _dir(settings) / "url"
    if not path.exists():
        return None
    url = path.read_text().strip()
    port = urlsplit(url).port
    return url if port is not None and _answers(port) else None


def start(settings: Settings) -> str:
    """Start (or find running) the local cluster; returns its URL."""
    found = running_url(settings)
    if found:
        return found
    stop(settings)
    cli = shutil.which("redis-cli")
    if cli is None:
        raise LocalServiceError("redis-cli is not on PATH: it joins the nodes into a cluster")
    root = _dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    ports = process.free_ports(NODES, _bus_port_free)
    for port in ports:
        (root / str(port)).mkdir()
        _launch(root, port)
    for port in ports:
        _wait_answers(root, port)
    subprocess.run(  # noqa: S603 - our own arguments
        [
            cli,
            "--cluster",
            "create",
            *(f"127.0.0.1:{p}" for p in ports),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
    )

    def formed() -> bool:
        return _covered(ports[0]) and all(_replicated(p) for p in ports)

    process.wait_ready(formed, START_TIMEOUT_S, "the Redis Cluster", root / "*" / "redis.log", poll_s=0.1)
    url = url_of(ports[0])
    (root / "url").write_text(url)
    return url


def restart_node(settings: Settings, port: int) -> None:
    """Start a stopped node again with its own data and cluster state: it rejoins (as a replica if it was failed
    over meanwhile)."""
    root = _dir(settings)
    _launch(root, port)
    _wait_answers(root, port)


def _launch(root: Path, port: int) -> None:
    """Start the node of ``port`` (it daemonizes itself) with its files under ``root/<port>``."""
    node = root / str(port)
    process.daemonize(
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--appendonly",
            "yes",
            "--save",
            "",
            "--dir",
            str(node),
            "--pidfile",
            str(node / "redis.pid"),
            "--logfile",
            str(node / "redis.log"),
            "--daemonize",
            "yes",
        ]
    )


def _wait_answers(root: Path, port: int) -> None:
    log = root / str(port) / "redis.log"
    process.wait_ready(lambda: _answers(port), START_TIMEOUT_S, f"redis-server on port {port}", log)


def _answers(port: int) -> bool:
    try:
        with contextlib.closing(redis.Redis(port=port, socket_timeout=0.5)) as r:
            return bool(r.ping())
    except (redis.RedisError, OSError):
        return False


def _covered(port: int) -> bool:
    """Every slot served and the cluster state ok, as the first node sees it."""
    with contextlib.closing(redis.Redis(port=port, socket_timeout=1, decode_responses=True)) as r:
        info: Any = r.cluster("INFO")
    if isinstance(info, dict):  # parsed by the client
        return str(info.get("cluster_state")) == "ok" and str(info.get("cluster_slots_ok")) == "16384"
    return "cluster_state:ok" in str(info) and "cluster_slots_ok:16384" in str(info)


def _replicated(port: int) -> bool:
    """A master with a replica online, or a replica whose link to its master is up."""
    with contextlib.closing(redis.Redis(port=port, socket_timeout=1, decode_responses=True)) as r:
        info: Any = r.info("replication")
    if info.get("role") == "master":
        return int(info.get("connected_slaves", 0)) >= 1 and str(info.get("slave0", {}).get("state")) == "online"
    return str(info.get("master_link_status")) == "up"


def node_pids(settings: Settings) -> dict[int, int]:
    """Port -> pid of each node that is running."""
    out: dict[int, int] = {}
    root = _dir(settings)
    if not root.exists():
        return out
    for node in root.iterdir():
        pid = process.read_pid(node / "redis.pid") if node.is_dir() and node.name.isdigit() else None
        if pid is not None:
            out[int(node.name)] = pid
    return out


def stop(settings: Settings) -> None:
    """Stop every node (a node still shutting down, waiting for its replicas, is killed after a grace period) and
    remove the cluster's directory."""
    process.stop_all(node_pids(settings).values(), STOP_GRACE_S)
    shutil.rmtree(_dir(settings), ignore_errors=True)
