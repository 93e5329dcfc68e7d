"""The write side: ``enqueue``, ``simulate``, ``dead-letters``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from app.cli.common import command_runtime, console, err, producer, to_json
from app.cli.root import cli, dead_cli
from app.core import constants as c
from app.core.errors import ValidationError
from app.write import deadletters
from app.write.replay import replay


@cli.command()
def enqueue(
    task: Annotated[str, typer.Argument(help=f"One of: {', '.join(c.EVENT_TASKS)}")],
    payloads: Annotated[
        list[str], typer.Argument(help='JSON keyword arguments, e.g. \'{"follower_id": 1, "user_id": 2}\'')
    ],
) -> None:
    """Validate and enqueue event tasks, exactly as the web app's producer does. Prints the event ids."""
    with command_runtime() as rt:
        sender = producer(rt)
        for raw in payloads:
            try:
                kwargs = json.loads(raw)
                if not isinstance(kwargs, dict):
                    raise ValidationError("the payload must be a JSON object")
                print(sender.send(task, **kwargs))
            except (ValueError, ValidationError) as exc:
                err.print(f"refused: {exc}")
                raise typer.Exit(2) from exc


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

    from app.ops import simulate as traffic

    with command_runtime() as rt:
        stream = traffic.TrafficGenerator(users=users, seed=seed).stream(
            events, duplicates=duplicates, out_of_order=out_of_order
        )
        started = time.monotonic()
        with Progress(console=err) as progress:
            bar = progress.add_task("sending", total=events)
            traffic.send(producer(rt), stream, rate=rate, batch=batch, on_sent=lambda: progress.advance(bar))
        elapsed = time.monotonic() - started
    console.print(f"sent {events} events in {elapsed:.1f} s ({events / elapsed:,.0f}/s)")


@dead_cli.command("list")
def dead_list(limit: int = 50, as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Show dead letters, oldest first."""
    with command_runtime() as rt:
        letters = deadletters.list_letters(rt.redis, limit)
        total = deadletters.count(rt.redis)
    if as_json:
        print(to_json({"total": total, "letters": [d.as_dict() for d in letters]}))
        return
    table = Table("id", "task", "error", "reason", "payload", title=f"{total} dead letters")
    for d in letters:
        # Everything here came from a producer: shown as text, never read as console markup.
        cells = (d.entry_id, d.task, d.error, d.reason, to_json(d.kwargs, default=str)[:120])
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table)


@dead_cli.command("replay")
def dead_replay(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids; all when omitted")] = None,
) -> None:
    """Re-enqueue dead letters through the producer's validation; those that now pass are removed."""
    with command_runtime() as rt:
        result = replay(rt.redis, producer(rt), ids)
    for entry_id, why in result.refused:
        err.print(f"[yellow]{escape(entry_id)}[/]: still invalid: {escape(why)}")
    console.print(f"replayed {result.replayed}, still refused {len(result.refused)}")
    if result.refused:
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
    with command_runtime() as rt:
        n = deadletters.purge_all(rt.redis) if all_ else deadletters.delete(rt.redis, ids or [])
    console.print(f"purged {n}")
