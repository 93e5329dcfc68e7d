"""The read side: ``user-metrics``, ``reactions``, ``history``, ``excluded-users``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from app.cli.common import command_runtime, console, err, ids, parse_time, refusing_bad_input, to_json
from app.cli.root import cli, excluded_cli
from app.core.events import ReactionFlag
from app.core.metrics import UserMetrics
from app.read.history import METRICS as HISTORY_METRICS
from app.read.metrics_service import UserMetricsQueryService
from app.read.sources import reactions_reader
from app.write import excluded


@cli.command("user-metrics")
def user_metrics(
    user_ids: Annotated[list[int], typer.Argument(help="User ids")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Values at this instant (ISO 8601), from ClickHouse")
    ] = None,
) -> None:
    """Metrics of users: cache first, ClickHouse on a miss (or the values as of an instant)."""
    user_ids = ids(user_ids, "user id")
    with refusing_bad_input(), command_runtime() as rt:
        found = UserMetricsQueryService(rt).get_user_metrics(user_ids, as_of=parse_time(as_of))
    if found.stale:
        err.print(f"[yellow]ClickHouse unreachable: stale values for users {sorted(found.stale)}[/yellow]")
    if as_json:
        out: dict[str, dict[str, Any]] = {}
        for uid, m in found.items():
            out[str(uid)] = m.to_json() | ({"stale": True} if uid in found.stale else {})
        print(to_json(out))
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
    user_id, image_ids = ids([user_id], "user id")[0], ids(image_ids, "image id")
    with refusing_bad_input(), command_runtime() as rt:
        # One read and out: fill the cache before the connections close.
        reader = reactions_reader(rt, fills=None)
        found = reader.get_user_reactions(user_id, image_ids)
    if found.unavailable:
        err.print(f"[yellow]ClickHouse unreachable: images {sorted(found.unavailable)} unknown[/yellow]")
    if as_json:
        print(to_json({str(i): flags for i, flags in found.items()}))
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
    user_id = ids([user_id], "user id")[0]
    start = parse_time(since)
    assert start is not None  # noqa: S101 - required option
    with refusing_bad_input(), command_runtime() as rt:
        points = UserMetricsQueryService(rt).get_user_metric_history(
            user_id, metric, start, parse_time(until), interval
        )
    if as_json:
        print(to_json([p.to_json() for p in points]))
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
    _excluded("add", ids(user_ids, "user id"), reason)


@excluded_cli.command("remove")
def excluded_remove(user_ids: Annotated[list[int], typer.Argument(help="User ids")]) -> None:
    """Take users off the excluded list."""
    _excluded("remove", ids(user_ids, "user id"), "")


@excluded_cli.command("list")
def excluded_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Show the excluded users."""
    entries = _excluded("list", [], "", quiet=True)
    if as_json:
        print(to_json(entries))
        return
    table = Table("user", "reason", "since")
    for e in entries:
        table.add_row(str(e["userId"]), e["reason"], e["since"])
    console.print(table)


def _excluded(action: str, user_ids: list[int], reason: str, quiet: bool = False) -> list[dict[str, Any]]:
    with command_runtime() as rt:
        entries = excluded.manage(rt, action, user_ids, reason)
    if not quiet:
        console.print(f"{action}: {user_ids}; excluded now: {[e['userId'] for e in entries]}")
    return entries
