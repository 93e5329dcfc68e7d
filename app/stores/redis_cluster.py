"""A local Redis Cluster for development and tests: three masters and three replicas of the machine's
``redis-server`` on loopback ports, under ``DATA_DIR/redis-cluster``.

``start`` launches the six nodes (cluster mode, AOF on, each in its own directory), joins them with
``redis-cli --cluster create --cluster-replicas 1`` and waits until every slot is served; it returns the URL the
project takes as ``REDIS_URL`` (``redis+cluster://127.0.0.1:<port>``). ``stop`` shuts the nodes down and removes
the directory. A production cluster is the operators' own; the project only needs its URL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from app.core.errors import PermanentError
from app.core.settings import Settings
from app.stores.embedded_redis import redis_binary

NODES = 6  # three masters, one replica each
START_TIMEOUT_S = 30.0
SCHEME = "redis+cluster"


def _dir(settings: Settings) -> Path:
    return settings.data_path / "redis-cluster"


def _ports(count: int) -> list[int]:
    """``count`` free loopback ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def url_of(port: int) -> str:
    return f"{SCHEME}://127.0.0.1:{port}"


def running_url(settings: Settings) -> str | None:
    path = _dir(settings) / "url"
    if not path.exists():
        return None
    url = path.read_text().strip()
    try:
        client = connect_cluster(url, timeout_s=1.0)
        with contextlib.closing(client):
            client.ping()
        return url
    except (redis.RedisError, OSError):
        return None


def connect_cluster(url: str, timeout_s: float) -> RedisCluster:
    """A cluster client for a ``redis+cluster://`` (or ``rediss+cluster://``) URL."""
    plain = url.replace("+cluster://", "://", 1)
    return RedisCluster.from_url(
        plain,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=8),  # rides through a failover
    )


def start(settings: Settings) -> str:
    """Start (or find running) the local cluster; returns its URL."""
    found = running_url(settings)
    if found:
        return found
    stop(settings)
    cli = shutil.which("redis-cli")
    if cli is None:
        raise PermanentError("redis-cli is not on PATH: it joins the nodes into a cluster")
    root = _dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    ports = _ports(NODES)
    for port in ports:
        (root / str(port)).mkdir()
        _launch(root, port)
    deadline = time.monotonic() + START_TIMEOUT_S
    for port in ports:
        while not _answers(port):
            if time.monotonic() > deadline:
                raise PermanentError(f"redis-server on port {port} did not start (see {root / str(port)})")
            time.sleep(0.05)
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
    while not (_covered(ports[0]) and all(_replicated(p) for p in ports)):
        if time.monotonic() > deadline:
            raise PermanentError("the cluster did not come up (see redis.log under each node)")
        time.sleep(0.1)
    url = url_of(ports[0])
    (root / "url").write_text(url)
    return url


def restart_node(settings: Settings, port: int) -> None:
    """Start a stopped node again with its own data and cluster state: it rejoins (as a replica if it was failed
    over meanwhile)."""
    _launch(_dir(settings), port)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(port):
        if time.monotonic() > deadline:
            raise PermanentError(f"redis-server on port {port} did not restart")
        time.sleep(0.05)


def _launch(root: Path, port: int) -> None:
    node = root / str(port)
    subprocess.run(  # noqa: S603 - our own binary and arguments
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
        ],
        check=True,
    )


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
        pidfile = node / "redis.pid"
        if node.is_dir() and pidfile.exists():
            with contextlib.suppress(ValueError):
                out[int(node.name)] = int(pidfile.read_text().strip())
    return out


def stop(settings: Settings) -> None:
    for pid in node_pids(settings).values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    root = _dir(settings)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in node_pids(settings).values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in node_pids(settings).values():  # a node still shutting down (waiting for its replicas): no more waiting
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
