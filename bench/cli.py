"""``python -m app bench ...``: the benchmarks, each printing figures and ratios against a baseline measured in the
same run. The group is attached to the service's command line by ``app/__main__.py`` when this package is there (a
checkout); the service's own CLI never imports it. With ``--json`` stdout holds the JSON document alone: progress
bars and the workers' output go to stderr."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from app.cli.common import console, err, to_json
from app.core.settings import load_settings

bench_cli = typer.Typer(no_args_is_help=True, help="Benchmarks: figures and ratios against a same-run baseline.")


def _print_bench(title: str, rows: list[tuple[str, str, str]], figures: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print(to_json(figures))
        return
    table = Table("measure", "result", "against", title=title)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _print_shapes(title: str, embedded: Any, server: Any | None, as_json: bool) -> None:
    """One table with the embedded figures and, when measured, the server shape's beside them."""
    if server is None:
        _print_bench(title, embedded.rows(), embedded.figures, as_json)
        return
    if as_json:
        print(to_json({"embedded": embedded.figures, "server": server.figures}))
        return
    table = Table("measure", "embedded", "server", "against", title=title)
    for (measure, here, against), (_, there, _) in zip(embedded.rows(), server.rows(), strict=True):
        table.add_row(measure, here, there, against)
    console.print(table)


_SERVER_URL_HELP = "also measure on this ClickHouse server (http://host:port)"
_SERVER_HELP = "also measure on a local ClickHouse server (kept under $DATA_DIR/bench/server)"


@contextlib.contextmanager
def _bench_server(url: str | None, start: bool) -> Iterator[str | None]:
    """The server a benchmark's server shape runs on: the one given, a local one started for it, or none. The local
    one keeps its data (the read and job datasets) for the next run."""
    if url is not None or not start:
        yield url
        return
    from app.local import clickhouse_server

    paths = clickhouse_server.ServerPaths(load_settings().data_path / "bench" / "server")
    try:
        yield clickhouse_server.start(paths)
    finally:
        clickhouse_server.stop(paths)


@bench_cli.command("ingest")
def bench_ingest(
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes, a few minutes")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON")] = False,
    clickhouse_url: Annotated[str | None, typer.Option(help=_SERVER_URL_HELP)] = None,
    server: Annotated[bool, typer.Option("--server", help=_SERVER_HELP)] = False,
    workers: Annotated[int, typer.Option(help="server shape: measure 1..N worker processes")] = 2,
    concurrency: Annotated[int, typer.Option(help="server shape: pool processes per worker")] = 4,
    jobs: Annotated[
        bool, typer.Option("--jobs/--no-jobs", help="(b) again in a window with and without beat (the jobs' share)")
    ] = True,
) -> None:
    """Write path: plain-Celery ceiling, per-message mix, 500-event batches, latency, worker memory, and the cost
    per event of each phase (CPU of every process, ClickHouse rows, Redis commands); embedded and, with --server or
    --clickhouse-url, the server shape side by side."""
    from bench import ingest

    with _bench_server(clickhouse_url, server) as url:
        result = ingest.run(quick, url, workers, concurrency, jobs)
    _print_bench("ingest" + (" (quick)" if quick else ""), result.rows(), result.figures, as_json)


@bench_cli.command("read")
def bench_read(
    quick: Annotated[bool, typer.Option("--quick", help="Small dataset, under a minute")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON")] = False,
    clickhouse_url: Annotated[str | None, typer.Option(help=_SERVER_URL_HELP)] = None,
    server: Annotated[bool, typer.Option("--server", help=_SERVER_HELP)] = False,
    growth: Annotated[
        bool,
        typer.Option(
            "--growth", help="Misses at 1M, 10M and 30M events instead (--quick: 100k to 1M); with a server, both"
        ),
    ] = False,
    plots: Annotated[
        Path | None, typer.Option(help="Where to draw the PNG figures (default: $DATA_DIR/bench/plots)")
    ] = None,
) -> None:
    """Read path on a generated event log (reused between runs): metrics and reactions, hits and misses, hit
    rate under Zipf reads, history; embedded and, with --server or --clickhouse-url, on a server side by side.
    Draws the latency distributions (and, with --growth, the growth curve) as PNG files."""
    from bench import read

    settings = load_settings()
    directory = plots or settings.data_path / "bench" / "plots"
    if growth:
        from bench import growth as growth_bench

        results = {"embedded": growth_bench.run(quick, settings)}
        with _bench_server(clickhouse_url, server) as url:
            if url is not None:
                results["server"] = growth_bench.run(quick, settings, url)
        if as_json:
            print(to_json({shape: result.figures() for shape, result in results.items()}))
            return
        for shape, result in results.items():
            _print_bench(f"read: misses against the log's size, {shape}", result.rows(), {}, False)
            curve = growth_bench.draw_growth(result, directory, shape)
            if curve:
                console.print(f"figure: {curve}")
        return
    embedded = read.run(quick, settings)
    with _bench_server(clickhouse_url, server) as url:
        on_server = read.run(quick, settings, url) if url is not None else None
    _print_shapes("read" + (" (quick)" if quick else ""), embedded, on_server, as_json)
    drawn = [read.draw(embedded, directory, "embedded")]
    if on_server is not None:
        drawn.append(read.draw(on_server, directory, "server"))
    if not as_json:
        for path in drawn:
            if path is not None:
                console.print(f"figure: {path}")


@bench_cli.command("jobs")
def bench_jobs(
    quick: Annotated[bool, typer.Option("--quick", help="Small datasets, about a minute")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON")] = False,
    clickhouse_url: Annotated[str | None, typer.Option(help=_SERVER_URL_HELP)] = None,
    server: Annotated[bool, typer.Option("--server", help=_SERVER_HELP)] = False,
) -> None:
    """Beat jobs on 1M and 10M events: full and incremental engagement, ranks, reconciliation; embedded and, with
    --server or --clickhouse-url, on a server side by side."""
    from bench import jobs as jobs_bench

    settings = load_settings()
    embedded = jobs_bench.run(quick, settings)
    with _bench_server(clickhouse_url, server) as url:
        on_server = jobs_bench.run(quick, settings, url) if url is not None else None
    _print_shapes("jobs" + (" (quick)" if quick else ""), embedded, on_server, as_json)


@bench_cli.command("insights")
def bench_insights(
    quick: Annotated[bool, typer.Option("--quick", help="Small dataset, about a minute")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON")] = False,
    clickhouse_url: Annotated[str | None, typer.Option(help=_SERVER_URL_HELP)] = None,
    server: Annotated[bool, typer.Option("--server", help=_SERVER_HELP)] = False,
    plots: Annotated[
        Path | None, typer.Option(help="Where to draw the PNG figure (default: $DATA_DIR/bench/plots)")
    ] = None,
) -> None:
    """Creator insights on the read benchmark's event log (10M events): p50/p99 of every insight for the 100
    most-followed and 100 random creators, the peers and achievements jobs, and the raw-log replay as baseline;
    embedded and, with --server or --clickhouse-url, on a server side by side."""
    from bench import insights as insights_bench

    settings = load_settings()
    results = {"embedded": insights_bench.run(quick, settings)}
    with _bench_server(clickhouse_url, server) as url:
        if url is not None:
            results["server"] = insights_bench.run(quick, settings, url)
    if as_json:
        print(to_json({shape: dict(f) for shape, f in results.items()}))
        return
    for shape, f in results.items():
        _print_bench(f"insights, {shape}" + (" (quick)" if quick else ""), insights_bench.rows(f), f, False)
    figure = insights_bench.draw(results, plots or settings.data_path / "bench" / "plots")
    if figure is not None:
        console.print(f"figure: {figure}")


@bench_cli.command("capacity")
def bench_capacity(
    quick: Annotated[bool, typer.Option("--quick", help="Small dataset, under a minute")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON")] = False,
    events_per_day: Annotated[float, typer.Option(help="the site to plan for: events per day")] = 50e6,
    reactions: Annotated[float, typer.Option(help="the site's reactions")] = 2e9,
    daily_readers: Annotated[float, typer.Option(help="the site's daily readers")] = 1e6,
    worker_events_per_s: Annotated[
        float, typer.Option(help="one worker process's batch rate (bench ingest's record_events figure)")
    ] = 18_500.0,
) -> None:
    """Bytes per event in ClickHouse, per cached user and per reactions field in Redis, one engine's insert rate;
    then the capacity plan for a site (shards, replicas, Redis memory and nodes, worker processes)."""
    from bench import capacity

    site = capacity.Site(
        events_per_day=events_per_day,
        reactions=reactions,
        daily_readers=daily_readers,
        worker_events_per_s=worker_events_per_s,
    )
    result = capacity.run(quick, load_settings(), site)
    _print_bench("capacity" + (" (quick)" if quick else ""), result.rows(), result.figures, as_json)


@bench_cli.command("cluster")
def bench_cluster(
    quick: Annotated[bool, typer.Option("--quick", help="200,000 events, about a minute")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON")] = False,
) -> None:
    """One local ClickHouse server against a local cluster of 2 shards x 2 replicas, in the same run: inserts,
    metrics misses and reactions misses on the same generated log."""
    from bench import cluster as cluster_bench

    result = cluster_bench.run(quick, load_settings())
    if as_json:
        print(to_json(result.figures))
        return
    table = Table(
        "measure", "one server", "cluster 2x2", "cluster / server", title="cluster" + (" (quick)" if quick else "")
    )
    for row in result.rows():
        table.add_row(*row)
    console.print(table)


@bench_cli.command("legacy")
def bench_legacy(
    quick: Annotated[bool, typer.Option("--quick", help="2,000 users, under a minute")] = False,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="A scratch database (its legacy tables are recreated)")
    ] = None,
    users: Annotated[int | None, typer.Option("--users", help="Dataset size in users (default 100,000)")] = None,
    reuse: Annotated[
        bool, typer.Option("--reuse", help="Keep a legacy dataset already seeded there for as many users")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON")] = False,
) -> None:
    """Legacy PostgreSQL aggregation vs this project on the same generated data."""
    from bench import legacy as legacy_bench

    result = legacy_bench.run(quick, load_settings(), database_url, users, reuse)
    _print_bench("legacy" + (" (quick)" if quick else ""), result.rows(), result.figures, as_json)


@bench_cli.command("seeds")
def bench_seeds(
    database_url: Annotated[
        str, typer.Option("--database-url", help="A PostgreSQL scratch database (its legacy tables are recreated)")
    ],
    quick: Annotated[bool, typer.Option("--quick", help="5,000 users (150,000 legacy rows), a few minutes")] = False,
    reuse: Annotated[
        bool, typer.Option("--reuse", help="Keep a legacy dataset already seeded there for as many users")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON")] = False,
    clickhouse_url: Annotated[str | None, typer.Option(help=_SERVER_URL_HELP)] = None,
    server: Annotated[bool, typer.Option("--server", help=_SERVER_HELP)] = False,
    plots: Annotated[
        Path | None, typer.Option(help="Where to draw the PNG figures (default: $DATA_DIR/bench/plots)")
    ] = None,
) -> None:
    """The seeds' success metrics as one scorecard: each line, its target, the figure measured (reads from a web
    app's process on a Zipf page mix, the migration's checks, storage, load, freshness), the legacy baseline of the
    same run, met or not; embedded and, with --server or --clickhouse-url, on a server side by side."""
    from bench import seeds, seeds_card

    settings = load_settings()
    legacy, base = seeds.prepare_legacy(quick, settings, database_url, reuse)
    results = {"embedded": seeds.measure(quick, settings, legacy, base, None)}
    with _bench_server(clickhouse_url, server) as url:
        if url is not None:
            results["server"] = seeds.measure(quick, settings, legacy, base, url)
    figures = {shape: result.card() for shape, result in results.items()}
    if as_json:
        print(to_json(figures))
    else:
        headers, rows = seeds_card.table(figures)
        table = Table(*headers, title="seeds: success metrics" + (" (quick dataset)" if quick else ""))
        for row in rows:
            table.add_row(*row)
        console.print(table)
    cards = {shape: seeds_card.lines(f) for shape, f in figures.items()}
    for path in seeds.draw(results, cards, plots or settings.data_path / "bench" / "plots"):
        if not as_json:
            console.print(f"figure: {path}")


@bench_cli.command("chaos")
def bench_chaos(
    minutes: Annotated[float, typer.Option(help="How long traffic and faults run")] = 2.0,
    broker: Annotated[str, typer.Option(help="rabbitmq (the machine's, a vhost of its own) or redis")] = "rabbitmq",
    seed: Annotated[int, typer.Option(help="Seed of the traffic and the fault schedule")] = 1,
    rate: Annotated[float, typer.Option(help="Messages per second")] = 30.0,
    users: Annotated[int, typer.Option(help="Distinct users of the traffic")] = 500,
    faults_per_kind: Annotated[int, typer.Option(help="Faults of each kind over the run")] = 3,
    stop_s: Annotated[float, typer.Option(help="How long each stop_clickhouse fault holds the server")] = 10.0,
    refuse_s: Annotated[float, typer.Option(help="How long each refuse_inserts fault lasts")] = 5.0,
    rolling: Annotated[bool, typer.Option("--rolling", help="A rolling restart, three times, instead")] = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 on any loss, double count or wrong value")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """The production shape (a ClickHouse server, the broker, two prefork workers, the maintenance worker and beat,
    supervised) under steady traffic and a seeded storm of faults; then every acknowledged event, every metric and
    every cached value against the oracle."""
    from bench import chaos, chaos_check

    if broker not in ("rabbitmq", "redis"):
        raise typer.BadParameter("rabbitmq or redis", param_hint="--broker")
    cfg = chaos.Config(
        minutes=minutes,
        seed=seed,
        broker=broker,
        rate=rate,
        users=users,
        faults_per_kind=faults_per_kind,
        stop_s=stop_s,
        refuse_s=refuse_s,
        rolling=rolling,
    )
    report = chaos.soak(cfg)
    if as_json:
        print(to_json(report))
    else:
        table = Table("measure", "result", title=f"chaos ({broker}, {minutes:g} min, seed {seed})")
        for key, value in report.items():
            table.add_row(key, to_json(value) if isinstance(value, dict | list) else str(value))
        console.print(table)
    failed = chaos_check.failures(report)
    if check and failed:
        err.print("chaos: " + ", ".join(failed))
        raise typer.Exit(1)
