"""The migration from the legacy database: ``seed-legacy``, ``backfill``, ``compare``, ``archive-image-reactions``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from app.cli.common import (
    command_runtime,
    console,
    err,
    ids,
    parse_time,
    progress_bars,
    refusing_bad_input,
    require_clickhouse_here,
    to_json,
)
from app.cli.root import cli
from app.core.settings import load_settings
from app.legacy import db
from app.stores import migrations


def _legacy_engine(create: bool = False) -> Any:
    eng = db.engine(load_settings())
    if create:
        db.create_schema(eng)
    return eng


@cli.command("seed-legacy")
def seed_legacy(
    users: Annotated[int, typer.Option("--users", help="Number of users")] = 1000,
    follows_per_user: Annotated[float, typer.Option(help="Average follows per user")] = 8.0,
    images_per_user: Annotated[float, typer.Option(help="Average images per user")] = 3.0,
    reactions_per_user: Annotated[float, typer.Option(help="Average reactions per user")] = 20.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data)")] = 7,
    run_job: Annotated[bool, typer.Option("--run-job/--no-run-job", help="Fill UserMetric with the legacy job")] = True,
) -> None:
    """Fill the legacy database (DATABASE_URL, else SQLite) with a realistic dataset, bulk loaded."""
    from app.legacy.baseline import run_legacy_job
    from app.migration.seed import LegacySpec
    from app.migration.seed import seed as seed_db

    spec = LegacySpec(users, follows_per_user, images_per_user, reactions_per_user, seed=seed)
    eng = _legacy_engine(create=True)
    started = time.monotonic()
    with progress_bars() as advance:
        counts = seed_db(eng, spec, advance)
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    console.print(f"seeded {total:,} rows in {elapsed:.1f} s ({total / elapsed:,.0f} rows/s): {counts}")
    if run_job:
        console.print(f"legacy job: {run_legacy_job(eng):,} UserMetric rows")


@cli.command()
def backfill(
    since: Annotated[
        str | None, typer.Option("--since", help="Only legacy rows created at or after (ISO 8601)")
    ] = None,
    entities: Annotated[
        str, typer.Option("--entities", help="follows,uploads,reactions")
    ] = "follows,uploads,reactions",
    warm: Annotated[bool, typer.Option("--warm", help="Then fill the metric caches of every legacy user")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Forget checkpoints and start from the beginning")] = False,
    via: Annotated[
        str,
        typer.Option(
            "--via",
            help="engine: ClickHouse reads the legacy tables itself (fast); python: rows stream through this "
            "process; auto: the engine when it can reach the legacy database",
        ),
    ] = "auto",
) -> None:
    """Legacy rows → events in ClickHouse (deterministic ids: idempotent; resumable from checkpoints)."""
    from app.migration import backfill as bf

    eng = _legacy_engine()
    with refusing_bad_input(), command_runtime() as rt:
        require_clickhouse_here(rt)
        migrations.migrate(rt.clickhouse)
        if restart:
            bf.reset_checkpoints(rt.clickhouse)
        with progress_bars() as advance:
            report = bf.backfill(
                rt,
                eng,
                [e.strip() for e in entities.split(",") if e.strip()],
                parse_time(since),
                progress=advance,
                via=via,
            )
        for name, key in report.resumed_from.items():
            console.print(f"{name}: resumed after key {key}")
        console.print(
            f"backfilled {sum(report.rows.values()):,} rows as {report.events:,} events in {report.seconds:.1f} s "
            f"({report.rows_per_s:,.0f} rows/s, via {report.via}); {report.excluded_users} deleted/banned users "
            f"excluded; {report.rows}"
        )
        if warm:
            console.print(f"warmed the caches of {bf.warm_caches(rt, eng):,} users")


@cli.command()
def compare(
    users: Annotated[
        list[int] | None, typer.Option("--users", help="User ids (repeat); default: all or --sample")
    ] = None,
    sample: Annotated[int | None, typer.Option("--sample", help="Compare N random users")] = None,
    metrics: Annotated[str | None, typer.Option("--metrics", help="Comma-separated fields (default all)")] = None,
    report_path: Annotated[str | None, typer.Option("--report", help="JSON report path")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampling seed")] = None,
) -> None:
    """PostgreSQL (legacy aggregation) vs ClickHouse (and caches): per-metric matches, mismatches, reasons."""

    from app.migration.compare import compare as run_compare

    users = ids(users, "user id") if users else users
    eng = _legacy_engine()
    with refusing_bad_input(), command_runtime() as rt:
        report = run_compare(
            rt, eng, users, sample, [m.strip() for m in metrics.split(",")] if metrics else None, seed=seed
        )
    table = Table("metric", "compared", "matches", "mismatches", "reasons", "examples (userId: postgres/clickhouse)")
    for m in report.metrics.values():
        examples = ", ".join(f"{e['userId']}: {e['postgres']}/{e['clickhouse']}" for e in m.examples)
        table.add_row(m.metric, str(m.compared), str(m.matches), str(m.mismatches), json.dumps(m.reasons), examples)
    table.add_row(
        "reactions (user, image)",
        str(report.reaction_pairs),
        str(report.reaction_pairs - report.reaction_mismatches),
        str(report.reaction_mismatches),
        json.dumps({"unexplained": report.reaction_mismatches} if report.reaction_mismatches else {}),
        ", ".join(f"{e['userId']}/{e['imageId']}: {e['postgres']}/{e['clickhouse']}" for e in report.reaction_examples),
    )
    console.print(table)
    console.print(f"cached hashes differing from ClickHouse: {report.cache_mismatches} {report.cache_examples}")
    path = Path(report_path) if report_path else load_settings().data_path / "compare-report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(report.to_json(), indent=2, default=str))
    console.print(f"report: {path}; unexplained mismatches: {report.unexplained}")
    if report.unexplained:
        raise typer.Exit(1)


@cli.command("archive-image-reactions")
def archive_image_reactions(
    out: Annotated[str | None, typer.Option("--out", help="Parquet file")] = None,
    confirm: Annotated[bool, typer.Option("--confirm", help="Really drop the legacy table")] = False,
) -> None:
    """Verify ClickHouse holds every legacy reaction, export ImageReaction to Parquet, print (or run) the drop."""

    from app.migration import archive

    eng = _legacy_engine()
    with command_runtime() as rt:
        require_clickhouse_here(rt)
        check = archive.verify(rt, eng)
    console.print(
        f"legacy reactions: {check.legacy_rows:,}; missing in ClickHouse: {check.missing:,} {check.missing_examples}; "
        f"users with different counts: {check.users_differing:,}; images: {check.images_differing:,}"
    )
    if not check.ok:
        err.print("[red]refused:[/red] ClickHouse does not hold every legacy reaction; run the backfill first")
        raise typer.Exit(1)
    path = Path(out) if out else load_settings().data_path / "archive" / "ImageReaction.parquet"
    console.print(f"exported {archive.export_parquet(eng, path):,} rows to {path}")
    for statement in archive.DROP_STATEMENTS:
        console.print(f"{statement};")
    if confirm:
        archive.drop(eng)
        console.print("dropped")
    else:
        console.print("not run: pass --confirm to drop")
