"""Command line: ``python -m app ...`` (DESIGN.md section 6). ``--json`` output is a contract."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app import buffer, clickhouse, deadletters, embedded_redis, migrations, runtime
from app import constants as c
from app.errors import PermanentError, TransientError
from app.events import Event, ReactionFlag
from app.excluded import list_excluded, set_excluded
from app.history import METRICS as HISTORY_METRICS
from app.ids import check_ids
from app.locks import redis_lock
from app.metrics import UserMetrics
from app.query import UserMetricsQueryService
from app.reactions import UserReactionQueryService
from app.runtime import Runtime
from app.settings import load_settings
from app.sources import reaction_source, through_worker

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="User metrics and image reactions service.",
)
bench_cli = typer.Typer(no_args_is_help=True, help="Benchmarks: figures and ratios against a same-run baseline.")
cli.add_typer(bench_cli, name="bench")
excluded_cli = typer.Typer(no_args_is_help=True, help="Manage excluded users (their actions count for nobody).")
cli.add_typer(excluded_cli, name="excluded-users")
dead_cli = typer.Typer(no_args_is_help=True, help="Inspect, replay or purge dead letters.")
cli.add_typer(dead_cli, name="dead-letters")
server_cli = typer.Typer(no_args_is_help=True, help="A local ClickHouse server (real ClickHouse 26.7) for server mode.")
cli.add_typer(server_cli, name="clickhouse-server")
console = Console()
err = Console(stderr=True)


@contextlib.contextmanager
def _refusing_bad_input() -> Iterator[None]:
    """Wrong arguments or configuration: one clear line on stderr and exit code 2, not a traceback."""
    try:
        yield
    except PermanentError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc


def _ids(values: Iterable[int], what: str) -> list[int]:
    """Ids given on the command line, checked before anything is started (an id out of range: exit 2)."""
    with _refusing_bad_input():
        return check_ids(values, what)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, infinities), at any depth, replaced by its string form."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_finite(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json(value: Any, **options: Any) -> str:
    """Strict JSON (no NaN or Infinity tokens, which JSON parsers other than Python's refuse) for every
    ``--json`` output and report."""
    return json.dumps(_finite(value), allow_nan=False, **options)


@contextlib.contextmanager
def _runtime() -> Iterator[Runtime]:
    """A runtime for this command: the configured Redis, the running stack's, or a temporary embedded one."""
    settings = load_settings()
    with embedded_redis.ensure(settings) as url:
        with runtime.use(Runtime(settings.model_copy(update={"redis_url": url}))) as rt:
            yield rt


@cli.command()
def run() -> None:
    """Start worker, beat and Flower (embedded defaults unless service URLs are set). Ctrl-C stops all."""
    from app.runner import run_stack

    logging.basicConfig(level=logging.INFO)
    raise typer.Exit(run_stack(load_settings()))


def _server_paths() -> Any:
    from app.clickhouse_server import ServerPaths

    return ServerPaths(load_settings().data_path / "clickhouse-server")


@server_cli.command("start")
def server_start(
    http_port: Annotated[int, typer.Option(help="HTTP port (0: the last one used, else a free one)")] = 0,
    tcp_port: Annotated[int, typer.Option(help="native protocol port (0: as for --http-port)")] = 0,
) -> None:
    """Start (or find running) a ClickHouse server on loopback; prints the CLICKHOUSE_URL to use."""
    from app import clickhouse_server

    try:
        url = clickhouse_server.start(_server_paths(), http_port, tcp_port)
    except clickhouse_server.ServerError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    print(f"{url}/{load_settings().clickhouse_database}")


@server_cli.command("stop")
def server_stop() -> None:
    """Stop the local ClickHouse server (its data stays under DATA_DIR/clickhouse-server)."""
    from app import clickhouse_server

    print("stopped" if clickhouse_server.stop(_server_paths()) else "not running")


@server_cli.command("status")
def server_status() -> None:
    """Print the local server's URL, or exit 1 when it is not running."""
    from app import clickhouse_server

    url = clickhouse_server.status(_server_paths())
    if url is None:
        print("not running")
        raise typer.Exit(1)
    print(url)


@cli.command()
def migrate() -> None:
    """Apply pending ClickHouse migrations (idempotent; safe to run concurrently)."""
    with _runtime() as rt:
        if clickhouse.owner_is_elsewhere(rt.settings):
            from tasks.celery_app import configure

            applied = configure(rt.settings).send_task(c.APPLY_MIGRATIONS, queue=c.READS_QUEUE).get(timeout=300)
        else:
            with redis_lock(rt.redis, "migrate", timeout_s=300):
                applied = migrations.migrate(rt.clickhouse)
    console.print(f"applied: {applied or 'nothing (up to date)'}")


@cli.command()
def enqueue(
    task: Annotated[str, typer.Argument(help=f"One of: {', '.join(c.EVENT_TASKS)}")],
    payloads: Annotated[
        list[str], typer.Argument(help='JSON keyword arguments, e.g. \'{"follower_id": 1, "user_id": 2}\'')
    ],
) -> None:
    """Validate and enqueue event tasks, exactly as the web app's producer does. Prints the event ids."""
    from app.errors import ValidationError
    from app.producer import EventProducer
    from tasks.celery_app import configure

    with _runtime() as rt:
        producer = EventProducer(configure(rt.settings))
        for raw in payloads:
            try:
                kwargs = json.loads(raw)
                if not isinstance(kwargs, dict):
                    raise ValidationError("the payload must be a JSON object")
                print(producer.send(task, **kwargs))
            except (ValueError, ValidationError) as exc:
                err.print(f"refused: {exc}")
                raise typer.Exit(2) from exc


@cli.command()
def schemas(
    write: Annotated[bool, typer.Option("--write", help="Regenerate schemas/*.json")] = False,
) -> None:
    """Check (or --write) the published JSON Schemas of the task payloads."""
    from app import schemas as s

    if write:
        for path in s.write_all():
            console.print(f"wrote {path}")
        return
    stale = s.drifted()
    if stale:
        err.print(f"schemas out of date for: {', '.join(stale)}; run `python -m app schemas --write`")
        raise typer.Exit(1)
    console.print("schemas up to date")


@cli.command()
def simulate(
    users: Annotated[int, typer.Option(help="Distinct users")] = 1000,
    events: Annotated[int, typer.Option(help="Messages to send")] = 10_000,
    rate: Annotated[float, typer.Option(help="Messages per second (0 = as fast as possible)")] = 500.0,
    duplicates: Annotated[float, typer.Option(help="Fraction re-sent with the same event id")] = 0.0,
    out_of_order: Annotated[float, typer.Option(help="Fraction stamped up to 60 s in the past")] = 0.0,
    batch: Annotated[int, typer.Option(help="Events per record_events message (1 = one task per event)")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
) -> None:
    """Drive realistic web-app traffic through the real task path, with a progress bar."""
    import time

    from rich.progress import Progress

    from app.producer import EventProducer
    from app.simulate import TrafficGenerator
    from tasks.celery_app import configure

    with _runtime() as rt:
        producer = EventProducer(configure(rt.settings))
        stream = TrafficGenerator(users=users, seed=seed).stream(
            events, duplicates=duplicates, out_of_order=out_of_order
        )
        started = time.monotonic()
        pending: list[dict[str, Any]] = []
        with Progress(console=console) as progress:
            bar = progress.add_task("sending", total=events)
            for sent, msg in enumerate(stream, start=1):
                if batch > 1:
                    pending.append({"type": msg.task, **msg.kwargs})
                    if len(pending) >= batch:
                        producer.send(c.RECORD_EVENTS, events=pending)
                        pending = []
                else:
                    producer.send(msg.task, **msg.kwargs)
                progress.advance(bar)
                if rate > 0:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            if pending:
                producer.send(c.RECORD_EVENTS, events=pending)
        elapsed = time.monotonic() - started
    console.print(f"sent {events} events in {elapsed:.1f} s ({events / elapsed:,.0f}/s)")


def _parse_time(value: str | None) -> datetime | None:
    """RFC 3339 / ISO 8601 (a date alone means its midnight, UTC), or None."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 time: {value!r}") from exc
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


@cli.command("user-metrics")
def user_metrics(
    user_ids: Annotated[list[int], typer.Argument(help="User ids")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Values at this instant (ISO 8601), from ClickHouse")
    ] = None,
) -> None:
    """Metrics of users: cache first, ClickHouse on a miss (or the values as of an instant)."""
    user_ids = _ids(user_ids, "user id")
    with _refusing_bad_input(), _runtime() as rt:
        found = UserMetricsQueryService(rt).get_user_metrics(user_ids, as_of=_parse_time(as_of))
    if found.stale:
        err.print(f"[yellow]ClickHouse unreachable: stale values for users {sorted(found.stale)}[/yellow]")
    if as_json:
        out: dict[str, dict[str, Any]] = {}
        for uid, m in found.items():
            out[str(uid)] = m.to_json() | ({"stale": True} if uid in found.stale else {})
        print(_json(out))
        return
    table = Table("metric", *(str(uid) + (" (stale)" if uid in found.stale else "") for uid in found))
    for name in UserMetrics().to_json():
        table.add_row(name, *("-" if (v := m.to_json()[name]) is None else str(v) for m in found.values()))
    console.print(table)


@cli.command()
def reactions(
    user_id: Annotated[int, typer.Argument(help="User id")],
    image_ids: Annotated[list[int], typer.Argument(help="Image ids (up to 1000)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """A user's reactions on images as bit flags (Like=1, Heart=2, Laugh=4, Cry=8): cache first."""
    user_id, image_ids = _ids([user_id], "user id")[0], _ids(image_ids, "image id")
    with _refusing_bad_input(), _runtime() as rt:
        found = UserReactionQueryService(rt.redis, reaction_source(rt)).get_user_reactions(user_id, image_ids)
    if found.unavailable:
        err.print(f"[yellow]ClickHouse unreachable: images {sorted(found.unavailable)} unknown[/yellow]")
    if as_json:
        print(_json({str(i): flags for i, flags in found.items()}))
        return
    table = Table("image", "flags", "reactions")
    for image, flags in found.items():
        names = [f.name.title() for f in ReactionFlag if flags & f and f.name] or ["-"]
        table.add_row(str(image), str(flags), ", ".join(names))
    console.print(table)


@cli.command()
def history(
    user_id: Annotated[int, typer.Argument(help="User id")],
    metric: Annotated[str, typer.Argument(help=f"One of: {', '.join(HISTORY_METRICS)}")],
    since: Annotated[str, typer.Option("--since", help="Start (ISO 8601 date or time)")],
    until: Annotated[str | None, typer.Option("--until", help="End (default now)")] = None,
    interval: Annotated[str, typer.Option("--interval", help="hour, day, week or month")] = "day",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """A user's metric over time (value at the end of each interval), from ClickHouse."""
    user_id = _ids([user_id], "user id")[0]
    start = _parse_time(since)
    assert start is not None  # noqa: S101 - required option
    with _refusing_bad_input(), _runtime() as rt:
        points = UserMetricsQueryService(rt).get_user_metric_history(
            user_id, metric, start, _parse_time(until), interval
        )
    if as_json:
        print(_json([p.to_json() for p in points]))
        return
    table = Table(interval, metric)
    for p in points:
        table.add_row(p.at.isoformat(), str(p.value))
    console.print(table)


@excluded_cli.command("add")
def excluded_add(
    user_ids: Annotated[list[int], typer.Argument(help="User ids")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the entry)")] = "",
) -> None:
    """Exclude users: their actions stop counting for anybody (cached metrics are recomputed)."""
    _excluded("add", _ids(user_ids, "user id"), reason)


@excluded_cli.command("remove")
def excluded_remove(user_ids: Annotated[list[int], typer.Argument(help="User ids")]) -> None:
    """Take users off the excluded list."""
    _excluded("remove", _ids(user_ids, "user id"), "")


@excluded_cli.command("list")
def excluded_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Show the excluded users."""
    entries = _excluded("list", [], "", quiet=True)
    if as_json:
        print(_json(entries))
        return
    table = Table("user", "reason", "since")
    for e in entries:
        table.add_row(str(e["userId"]), e["reason"], e["since"])
    console.print(table)


def _excluded(action: str, user_ids: list[int], reason: str, quiet: bool = False) -> list[dict[str, Any]]:
    with _runtime() as rt:
        if clickhouse.owner_is_elsewhere(rt.settings):
            entries: list[dict[str, Any]] = through_worker(
                rt, c.MANAGE_EXCLUDED_USERS, action=action, user_ids=user_ids, reason=reason
            )
        else:
            if action != "list":
                set_excluded(rt, user_ids, excluded=action == "add", reason=reason)
            entries = [e.to_json() for e in list_excluded(rt.clickhouse)]
    if not quiet:
        console.print(f"{action}: {user_ids}; excluded now: {[e['userId'] for e in entries]}")
    return entries


def _legacy_engine(create: bool = False) -> Any:
    from app.legacy import db

    eng = db.engine(load_settings())
    if create:
        db.create_schema(eng)
    return eng


def _require_clickhouse_here(rt: Runtime) -> None:
    if clickhouse.owner_is_elsewhere(rt.settings):
        err.print(
            "[red]error:[/red] the running worker owns the embedded ClickHouse; stop the stack (or use server mode, "
            "CLICKHOUSE_URL=http://...) to run this command"
        )
        raise typer.Exit(2)


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
    from rich.progress import Progress

    from app.legacy.baseline import run_legacy_job
    from app.legacy.seed import LegacySpec
    from app.legacy.seed import seed as seed_db

    spec = LegacySpec(users, follows_per_user, images_per_user, reactions_per_user, seed=seed)
    eng = _legacy_engine(create=True)
    started = time.monotonic()
    with Progress(console=err) as progress:
        tasks: dict[str, Any] = {}

        def advance(table: str, n: int) -> None:
            if table not in tasks:
                tasks[table] = progress.add_task(table, total=None)
            progress.advance(tasks[table], n)

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
    from rich.progress import Progress

    from app.legacy import backfill as bf

    eng = _legacy_engine()
    with _refusing_bad_input(), _runtime() as rt:
        _require_clickhouse_here(rt)
        migrations.migrate(rt.clickhouse)
        if restart:
            bf.reset_checkpoints(rt.clickhouse)
        with Progress(console=err) as progress:
            bars: dict[str, Any] = {}

            def advance(name: str, n: int) -> None:
                if name not in bars:
                    bars[name] = progress.add_task(name, total=None)
                progress.advance(bars[name], n)

            report = bf.backfill(
                rt,
                eng,
                [e.strip() for e in entities.split(",") if e.strip()],
                _parse_time(since),
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
            from sqlalchemy import select

            from app.legacy.models import User

            with eng.connect() as conn:
                ids = [int(u) for (u,) in conn.execute(select(User.id))]
            service = UserMetricsQueryService(rt)
            for i in range(0, len(ids), 2000):
                service.get_user_metrics(ids[i : i + 2000])
            console.print(f"warmed the caches of {len(ids):,} users")


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

    from app.legacy.compare import compare as run_compare

    users = _ids(users, "user id") if users else users
    eng = _legacy_engine()
    with _refusing_bad_input(), _runtime() as rt:
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
    path.write_text(_json(report.to_json(), indent=2, default=str))
    console.print(f"report: {path}; unexplained mismatches: {report.unexplained}")
    if report.unexplained:
        raise typer.Exit(1)


@cli.command("archive-image-reactions")
def archive_image_reactions(
    out: Annotated[str | None, typer.Option("--out", help="Parquet file")] = None,
    confirm: Annotated[bool, typer.Option("--confirm", help="Really drop the legacy table")] = False,
) -> None:
    """Verify ClickHouse holds every legacy reaction, export ImageReaction to Parquet, print (or run) the drop."""

    from app.legacy import archive

    eng = _legacy_engine()
    with _runtime() as rt:
        _require_clickhouse_here(rt)
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


@dead_cli.command("list")
def dead_list(limit: int = 50, as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Show dead letters, oldest first."""
    with _runtime() as rt:
        letters = deadletters.list_letters(rt.redis, limit)
        total = deadletters.count(rt.redis)
    if as_json:
        print(_json({"total": total, "letters": [d.as_dict() for d in letters]}))
        return
    table = Table("id", "task", "error", "reason", "payload", title=f"{total} dead letters")
    for d in letters:
        # Everything here came from a producer: shown as text, never read as console markup.
        cells = (d.entry_id, d.task, d.error, d.reason, _json(d.kwargs, default=str)[:120])
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table)


@dead_cli.command("replay")
def dead_replay(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids; all when omitted")] = None,
) -> None:
    """Re-enqueue dead letters through the producer's validation; those that now pass are removed."""
    from app.producer import EventProducer
    from tasks.celery_app import configure

    with _runtime() as rt:
        producer = EventProducer(configure(rt.settings))
        letters = deadletters.get(rt.redis, ids) if ids else deadletters.list_letters(rt.redis, 100_000)
        replayed, refused = 0, 0
        for letter in letters:
            try:
                if letter.task == c.BUFFERED_EVENTS_TASK and isinstance(letter.kwargs, dict):
                    # Validated events the flusher could not write: back into the buffer as they were.
                    events = [Event.from_json(item) for item in letter.kwargs["events"]]
                    buffer.append(rt.redis, str(letter.kwargs.get("source_task", "")), events)
                elif letter.task in c.EVENT_TASKS and isinstance(letter.kwargs, dict):
                    producer.send(letter.task, **letter.kwargs)
                else:
                    raise ValueError(f"not a replayable event task message ({letter.task or 'no task name'})")
            except (ValueError, TypeError, KeyError) as exc:
                refused += 1
                err.print(f"[yellow]{letter.entry_id}[/]: still invalid: {exc}")
                continue
            deadletters.delete(rt.redis, [letter.entry_id])
            replayed += 1
    console.print(f"replayed {replayed}, still refused {refused}")
    if refused:
        raise typer.Exit(1)


@dead_cli.command("purge")
def dead_purge(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Purge every dead letter")] = False,
) -> None:
    """Delete dead letters (given ids, or --all)."""
    if not ids and not all_:
        err.print("give dead-letter ids or --all")
        raise typer.Exit(2)
    with _runtime() as rt:
        n = deadletters.purge_all(rt.redis) if all_ else deadletters.delete(rt.redis, ids or [])
    console.print(f"purged {n}")


def _print_bench(title: str, rows: list[tuple[str, str, str]], figures: dict[str, float], as_json: bool) -> None:
    if as_json:
        print(_json(figures))
        return
    table = Table("measure", "result", "against", title=title)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _print_shapes(title: str, embedded: Any, server: Any | None, as_json: bool, server_label: str = "server") -> None:
    """One table with the embedded figures and, when measured, the server shape's beside them."""
    if server is None:
        _print_bench(title, embedded.rows(), embedded.figures, as_json)
        return
    if as_json:
        print(_json({"embedded": embedded.figures, "server": server.figures}))
        return
    table = Table("measure", "embedded", server_label, "against", title=title)
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
    from app import clickhouse_server

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
) -> None:
    """Write path: plain-Celery ceiling, per-message mix, 500-event batches, latency, worker memory; embedded and,
    with --server or --clickhouse-url, the server shape side by side."""
    from app.bench import ingest

    with _bench_server(clickhouse_url, server) as url:
        result = ingest.run(quick, url, workers, concurrency)
    _print_bench("ingest" + (" (quick)" if quick else ""), result.rows(), result.figures, as_json)


@bench_cli.command("read")
def bench_read(
    quick: Annotated[bool, typer.Option("--quick", help="Small dataset, under a minute")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON")] = False,
    clickhouse_url: Annotated[str | None, typer.Option(help=_SERVER_URL_HELP)] = None,
    server: Annotated[bool, typer.Option("--server", help=_SERVER_HELP)] = False,
) -> None:
    """Read path on a generated event log (reused between runs): metrics and reactions, hits and misses, hit
    rate under Zipf reads, history; embedded and, with --server or --clickhouse-url, on a server side by side."""
    from app.bench import read

    settings = load_settings()
    embedded = read.run(quick, settings)
    with _bench_server(clickhouse_url, server) as url:
        on_server = read.run(quick, settings, url) if url is not None else None
    _print_shapes("read" + (" (quick)" if quick else ""), embedded, on_server, as_json)


@bench_cli.command("jobs")
def bench_jobs(
    quick: Annotated[bool, typer.Option("--quick", help="Small datasets, about a minute")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON")] = False,
    clickhouse_url: Annotated[str | None, typer.Option(help=_SERVER_URL_HELP)] = None,
    server: Annotated[bool, typer.Option("--server", help=_SERVER_HELP)] = False,
) -> None:
    """Beat jobs on 1M and 10M events: full and incremental engagement, ranks, reconciliation; embedded and, with
    --server or --clickhouse-url, on a server side by side."""
    from app.bench import jobs as jobs_bench

    settings = load_settings()
    embedded = jobs_bench.run(quick, settings)
    with _bench_server(clickhouse_url, server) as url:
        on_server = jobs_bench.run(quick, settings, url) if url is not None else None
    _print_shapes("jobs" + (" (quick)" if quick else ""), embedded, on_server, as_json)


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
    from app.bench import legacy as legacy_bench

    result = legacy_bench.run(quick, load_settings(), database_url, users, reuse)
    _print_bench("legacy" + (" (quick)" if quick else ""), result.rows(), result.figures, as_json)


def main(argv: Sequence[str] | None = None) -> Any:
    try:
        return cli(args=list(argv) if argv is not None else sys.argv[1:], prog_name="python -m app")
    except TransientError as exc:
        # A store is down or unreachable: one line saying which, and exit 1 (retrying later can succeed).
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise SystemExit(1) from exc
