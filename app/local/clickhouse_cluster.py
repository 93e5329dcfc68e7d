"""A local ClickHouse cluster for development, tests and benchmarks: shards x replicas of the local server
(``app.local.clickhouse_server``, real ClickHouse 26.7) on loopback, under ``DATA_DIR/clickhouse-cluster``, and
Apache ZooKeeper when the machine has it (Debian's ``zookeeperd``: ``/usr/share/java/zookeeper.jar`` and Java).

Every node gets a configuration file naming the cluster (``remote_servers``), its ``macros`` (shard, replica) and
the coordination service. What this server build can do:
- ``Distributed`` tables over the nodes answer exact sums across shards, with foreground inserts;
- ``ReplicatedMergeTree`` tables are created and registered in ZooKeeper, but stay read-only: replication needs
  the interserver HTTP endpoint, which this build does not start (``interserver_http_port`` is ignored);
- ``ON CLUSTER`` is refused ("Replicated DDL queries are disabled").
So the local cluster replicates with the Distributed engine itself (``internal_replication`` false: an insert
writes every replica of its shard, and fails while one of them is down) and the project runs with
``CLICKHOUSE_REPLICATION=distributed``; a production cluster of full servers uses ``keeper``
(``docker-compose.cluster.yml``).

``start`` returns the environment the project needs (``CLICKHOUSE_URL`` listing every node, ``CLICKHOUSE_CLUSTER``,
``CLICKHOUSE_REPLICATION``); ``stop_node`` and ``start_node`` take one node down and back (fault tests).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from app.core.settings import Settings
from app.local import clickhouse_server, process
from app.local.clickhouse_server import ServerPaths
from app.local.process import LocalServiceError

CLUSTER = "usermetrics"
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
ZOOKEEPER_LOG_CONFIG = Path("/etc/zookeeper/conf_example")
ZOOKEEPER_START_TIMEOUT_S = 30.0
ZOOKEEPER_STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class Node:
    index: int  # 1-based, shard-major: shard 1 replica 1, shard 1 replica 2, shard 2 replica 1, ...
    shard: int
    replica: int
    http_port: int
    tcp_port: int


@dataclass(frozen=True)
class Layout:
    shards: int
    replicas: int
    nodes: list[Node]
    zookeeper_port: int | None


def root_of(settings: Settings) -> Path:
    return settings.data_path / "clickhouse-cluster"


def _layout_file(root: Path) -> Path:
    return root / "cluster.json"


def load_layout(root: Path) -> Layout | None:
    path = _layout_file(root)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return Layout(raw["shards"], raw["replicas"], [Node(**n) for n in raw["nodes"]], raw["zookeeper_port"])


def _new_layout(root: Path, shards: int, replicas: int) -> Layout:
    count = shards * replicas
    ports = process.free_ports(2 * count + 1)
    nodes = [Node(i + 1, i // replicas + 1, i % replicas + 1, ports[2 * i], ports[2 * i + 1]) for i in range(count)]
    zookeeper = ports[-1] if zookeeper_available() else None
    layout = Layout(shards, replicas, nodes, zookeeper)
    root.mkdir(parents=True, exist_ok=True)
    _layout_file(root).write_text(json.dumps(asdict(layout)))
    return layout


def zookeeper_available() -> bool:
    return ZOOKEEPER_JAR.exists() and shutil.which("java") is not None


def node_paths(root: Path, node: Node) -> ServerPaths:
    return ServerPaths(root / f"node{node.index}")


# Queries between nodes wait for the replica they picked instead of hedging: a hedged request gives up on a slow
# replica's connection by closing it, and this engine build aborts the whole server when a peer resets a connection
# its TCP handler is reading (seen on a loaded machine, where a node is slow to answer within the 50 ms default).
# Given on the command line, the node's default for every session, the distributed queries' included.
NODE_SETTINGS = ["--use_hedged_requests=0"]


def _config(layout: Layout, node: Node) -> str:
    shards = []
    for shard in range(1, layout.shards + 1):
        replicas = "".join(
            f"<replica><host>127.0.0.1</host><port>{n.tcp_port}</port></replica>"
            for n in layout.nodes
            if n.shard == shard
        )
        shards.append(f"<shard><internal_replication>false</internal_replication>{replicas}</shard>")
    zookeeper = (
        f"<zookeeper><node><host>127.0.0.1</host><port>{layout.zookeeper_port}</port></node></zookeeper>"
        if layout.zookeeper_port
        else ""
    )
    return (
        "<clickhouse>\n"
        f"  <remote_servers><{CLUSTER}>{''.join(shards)}</{CLUSTER}></remote_servers>\n"
        f"  {zookeeper}\n"
        f"  <macros><shard>{node.shard:02d}</shard><replica>r{node.replica}</replica></macros>\n"
        "</clickhouse>\n"
    )


def _zookeeper_dir(root: Path) -> Path:
    return root / "zookeeper"


def _answers_ruok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"ruok")
            return sock.recv(16) == b"imok"
    except OSError:
        return False


def _start_zookeeper(root: Path, port: int) -> None:
    if _answers_ruok(port):
        return
    home = _zookeeper_dir(root)
    (home / "data").mkdir(parents=True, exist_ok=True)
    config = home / "zoo.cfg"
    config.write_text(
        "tickTime=2000\n"
        f"dataDir={home / 'data'}\n"
        f"clientPort={port}\n"
        "clientPortAddress=127.0.0.1\n"
        "admin.enableServer=false\n"
        "4lw.commands.whitelist=ruok\n"
    )
    java = shutil.which("java") or "java"
    argv = [
        java,
        "-Xmx256m",
        "-cp",
        f"{ZOOKEEPER_JAR}:{ZOOKEEPER_LOG_CONFIG}",
        f"-Dzookeeper.log.dir={home}",
        "org.apache.zookeeper.server.ZooKeeperServerMain",
        str(config),
    ]
    log = home / "zookeeper.log"
    proc = process.spawn(argv, log, home / "pid")
    process.wait_ready(lambda: _answers_ruok(port), ZOOKEEPER_START_TIMEOUT_S, "ZooKeeper", log, poll_s=0.2, proc=proc)


def _stop_zookeeper(root: Path) -> None:
    pid_file = _zookeeper_dir(root) / "pid"
    pid = process.read_pid(pid_file)
    if pid is not None:
        process.stop(pid, ZOOKEEPER_STOP_GRACE_S)
    pid_file.unlink(missing_ok=True)


def start_node(root: Path, node: Node) -> str:
    layout = load_layout(root)
    assert layout is not None
    config = root / f"node{node.index}.xml"
    config.write_text(_config(layout, node))
    return clickhouse_server.start(
        node_paths(root, node), node.http_port, node.tcp_port, [f"--config-file={config}", *NODE_SETTINGS]
    )


def stop_node(root: Path, node: Node) -> None:
    clickhouse_server.stop(node_paths(root, node))


def start(settings: Settings, shards: int = 2, replicas: int = 2) -> dict[str, str]:
    """Start (or find running) the local cluster; returns the environment that points the project at it."""
    root = root_of(settings)
    layout = load_layout(root)
    if layout is None or (layout.shards, layout.replicas) != (shards, replicas):
        stop(settings)
        layout = _new_layout(root, shards, replicas)
    clickhouse_server.library()  # fetched once, before the nodes start side by side
    if layout.zookeeper_port:
        _start_zookeeper(root, layout.zookeeper_port)
    for node in layout.nodes:
        start_node(root, node)
    return environment(settings, layout)


def environment(settings: Settings, layout: Layout) -> dict[str, str]:
    db = settings.clickhouse_database
    return {
        "CLICKHOUSE_URL": ",".join(f"http://127.0.0.1:{n.http_port}/{db}" for n in layout.nodes),
        "CLICKHOUSE_CLUSTER": CLUSTER,
        "CLICKHOUSE_REPLICATION": "distributed",
    }


def stop(settings: Settings) -> bool:
    """Stop every node and ZooKeeper, and remove the cluster's data; False if nothing was there."""
    root = root_of(settings)
    layout = load_layout(root)
    if layout is None:
        return False
    for node in layout.nodes:
        with contextlib.suppress(LocalServiceError):
            stop_node(root, node)
    _stop_zookeeper(root)
    shutil.rmtree(root, ignore_errors=True)
    return True


def running(settings: Settings) -> dict[str, str] | None:
    """The environment of the running cluster, or None when a node is not answering."""
    root = root_of(settings)
    layout = load_layout(root)
    if layout is None or any(clickhouse_server.status(node_paths(root, n)) is None for n in layout.nodes):
        return None
    return environment(settings, layout)


def query(node: Node, sql: str) -> str:
    """``sql`` on one node, over HTTP (tests and diagnostics)."""
    request = urllib.request.Request(f"http://127.0.0.1:{node.http_port}/", data=sql.encode())
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - a loopback node of ours
        return str(reply.read().decode())
