"""The root command (``python -m app``) and its groups; the commands are in the modules beside this one. The
benchmarks' group (``bench``) lives outside the service and is attached by ``app/__main__.py``."""

from __future__ import annotations

import typer

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="User metrics and image reactions service.",
)
excluded_cli = typer.Typer(no_args_is_help=True, help="Manage excluded users (their actions count for nobody).")
cli.add_typer(excluded_cli, name="excluded-users")
dead_cli = typer.Typer(no_args_is_help=True, help="Inspect, replay or purge dead letters.")
cli.add_typer(dead_cli, name="dead-letters")
server_cli = typer.Typer(no_args_is_help=True, help="A local ClickHouse server (real ClickHouse 26.7) for server mode.")
cli.add_typer(server_cli, name="clickhouse-server")
redis_cluster_cli = typer.Typer(
    no_args_is_help=True, help="A local Redis Cluster (three masters, three replicas) for cluster mode."
)
cli.add_typer(redis_cluster_cli, name="redis-cluster")
clickhouse_cluster_cli = typer.Typer(
    no_args_is_help=True, help="A local ClickHouse cluster (shards x replicas, ZooKeeper) for cluster mode."
)
cli.add_typer(clickhouse_cluster_cli, name="clickhouse-cluster")
