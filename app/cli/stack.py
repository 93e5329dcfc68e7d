"""Running the stack: ``run``, ``migrate``, ``schemas``, ``clickhouse-server``, ``clickhouse-cluster``,
``redis-cluster``."""

from __future__ import annotations

import logging
import shlex
from typing import Annotated, Any

import typer
from rich.markup import escape

from app.cli.common import command_runtime, console, err
from app.cli.root import cli, clickhouse_cluster_cli, redis_cluster_cli, server_cli
from app.core.settings import load_settings
from app.stores import migrations


@cli.command()
def run() -> None:
    """Start worker, beat and Flower (embedded defaults unless service URLs are set). Ctrl-C stops all."""
    from app.ops.runner import run_stack

    logging.basicConfig(level=logging.INFO)
    raise typer.Exit(run_stack(load_settings()))


def _server_paths() -> Any:
    from app.local.clickhouse_server import ServerPaths

    return ServerPaths(load_settings().data_path / "clickhouse-server")


@server_cli.command("start")
def server_start(
    http_port: Annotated[int, typer.Option(help="HTTP port (0: the last one used, else a free one)")] = 0,
    tcp_port: Annotated[int, typer.Option(help="native protocol port (0: as for --http-port)")] = 0,
) -> None:
    """Start (or find running) a ClickHouse server on loopback; prints the CLICKHOUSE_URL to use."""
    from app.local import clickhouse_server
    from app.local.process import LocalServiceError

    try:
        url = clickhouse_server.start(_server_paths(), http_port, tcp_port)
    except LocalServiceError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    print(f"{url}/{load_settings().clickhouse_database}")


@server_cli.command("stop")
def server_stop() -> None:
    """Stop the local ClickHouse server (its data stays under DATA_DIR/clickhouse-server)."""
    from app.local import clickhouse_server

    print("stopped" if clickhouse_server.stop(_server_paths()) else "not running")


@server_cli.command("status")
def server_status() -> None:
    """Print the local server's URL, or exit 1 when it is not running."""
    from app.local import clickhouse_server

    url = clickhouse_server.status(_server_paths())
    if url is None:
        print("not running")
        raise typer.Exit(1)
    print(url)


@redis_cluster_cli.command("start")
def redis_cluster_start() -> None:
    """Start (or find running) a local Redis Cluster under DATA_DIR/redis-cluster; prints the REDIS_URL to use."""
    from app.local import redis_cluster
    from app.local.process import LocalServiceError

    try:
        print(redis_cluster.start(load_settings()))
    except LocalServiceError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc


@redis_cluster_cli.command("stop")
def redis_cluster_stop() -> None:
    """Stop the local Redis Cluster and remove its data."""
    from app.local import redis_cluster

    redis_cluster.stop(load_settings())
    print("stopped")


@clickhouse_cluster_cli.command("start")
def clickhouse_cluster_start(
    shards: Annotated[int, typer.Option(min=1, max=8, help="shards")] = 2,
    replicas: Annotated[int, typer.Option(min=1, max=3, help="replicas of each shard")] = 2,
) -> None:
    """Start (or find running) a local ClickHouse cluster under DATA_DIR/clickhouse-cluster; prints the settings
    that point the project at it, as shell exports (eval "$(python -m app clickhouse-cluster start)")."""
    from app.local import clickhouse_cluster
    from app.local.process import LocalServiceError

    try:
        env = clickhouse_cluster.start(load_settings(), shards, replicas)
    except LocalServiceError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")


@clickhouse_cluster_cli.command("stop")
def clickhouse_cluster_stop() -> None:
    """Stop the local ClickHouse cluster and ZooKeeper, and remove their data."""
    from app.local import clickhouse_cluster

    print("stopped" if clickhouse_cluster.stop(load_settings()) else "not running")


@clickhouse_cluster_cli.command("status")
def clickhouse_cluster_status() -> None:
    """Print the settings of the running local cluster, or exit 1 when a node is not answering."""
    from app.local import clickhouse_cluster

    env = clickhouse_cluster.running(load_settings())
    if env is None:
        print("not running")
        raise typer.Exit(1)
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")


@cli.command()
def migrate() -> None:
    """Apply pending ClickHouse migrations (idempotent; safe to run concurrently)."""
    with command_runtime() as rt:
        applied = migrations.migrate_anywhere(rt)
    console.print(f"applied: {applied or 'nothing (up to date)'}")


@cli.command()
def schemas(
    write: Annotated[bool, typer.Option("--write", help="Regenerate schemas/*.json")] = False,
) -> None:
    """Check (or --write) the published JSON Schemas of the task payloads."""
    from app.ops import schemas as s

    if write:
        for path in s.write_all():
            console.print(f"wrote {path}")
        return
    stale = s.drifted()
    if stale:
        err.print(f"schemas out of date for: {', '.join(stale)}; run `python -m app schemas --write`")
        raise typer.Exit(1)
    console.print("schemas up to date")
