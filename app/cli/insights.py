"""Creator insights (``insights growth|retention|audience|activity|peers|achievements USER``) and ``jobs run``."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import typer
from rich.table import Table

from app.cli.common import command_runtime, console, parse_time, refusing_bad_input, to_json
from app.cli.root import cli
from app.core import constants as c
from app.core.errors import ValidationError
from app.insights.service import UserInsightsService
from app.jobs.registry import run_now
from app.stores import clickhouse
from app.stores.broker import through_worker

insights_cli = typer.Typer(no_args_is_help=True, help="Creator insights from the event log (exact, fresh).")
cli.add_typer(insights_cli, name="insights")
jobs_cli = typer.Typer(no_args_is_help=True, help="Beat jobs, on demand.")
cli.add_typer(jobs_cli, name="jobs")

User = Annotated[int, typer.Argument(help="User id")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON")]
AsOf = Annotated[str | None, typer.Option("--as-of", help="Only events at or before this instant (default now)")]
Zone = Annotated[str, typer.Option("--tz", help="IANA time zone of days, weeks and hours")]
From = Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD)")]
To = Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD), inclusive")]


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(f"{option} {value!r} is not a day (YYYY-MM-DD)") from exc


def _answer(kind: str, user_id: int, as_json: bool, **params: Any) -> None:
    with refusing_bad_input():
        if "as_of" in params:
            params["as_of"] = parse_time(params["as_of"])
        for option in ("start", "end"):
            if option in params:
                params[option] = _day(params[option], "--from" if option == "start" else "--to")
        with command_runtime() as rt:
            answer = getattr(UserInsightsService(rt), kind)(user_id, **params)
    if as_json:
        print(to_json(answer))
    else:
        _show(kind, answer)


@insights_cli.command()
def growth(user_id: User, start: From, end: To, tz: Zone = "UTC", as_of: AsOf = None, as_json: AsJson = False) -> None:
    """Followers gained, lost and held at the end of each day."""
    _answer("growth", user_id, as_json, start=start, end=end, tz=tz, as_of=as_of)


@insights_cli.command()
def retention(
    user_id: User,
    weeks: Annotated[int, typer.Option("--weeks", help="Cohorts: the weeks ending with this one")] = 12,
    tz: Zone = "UTC",
    as_of: AsOf = None,
    as_json: AsJson = False,
) -> None:
    """Weekly follower cohorts and how many of each still follow, week by week."""
    _answer("retention", user_id, as_json, weeks=weeks, tz=tz, as_of=as_of)


@insights_cli.command()
def audience(
    user_id: User, start: From, end: To, tz: Zone = "UTC", as_of: AsOf = None, as_json: AsJson = False
) -> None:
    """Reactions and downloads received in a range, from followers and from others."""
    _answer("audience", user_id, as_json, start=start, end=end, tz=tz, as_of=as_of)


@insights_cli.command()
def activity(
    user_id: User,
    days: Annotated[int, typer.Option("--days", help="The last N days")] = 28,
    tz: Zone = "UTC",
    as_of: AsOf = None,
    as_json: AsJson = False,
) -> None:
    """Engagement received per weekday and hour, and the three best hours to post."""
    _answer("activity", user_id, as_json, days=days, tz=tz, as_of=as_of)


@insights_cli.command()
def peers(user_id: User, as_json: AsJson = False) -> None:
    """Percentiles among creators, overall and in the follower band (as of the last recompute_peers run)."""
    _answer("peers", user_id, as_json)


@insights_cli.command()
def achievements(user_id: User, as_json: AsJson = False) -> None:
    """Badge tiers earned (as of the last award_achievements run)."""
    _answer("achievements", user_id, as_json)


def _show(kind: str, answer: dict[str, Any]) -> None:
    """A table for people; ``--json`` is the contract."""
    if kind == "growth":
        table = Table("day", "gained", "lost", "followers")
        for d in answer["days"]:
            table.add_row(d["day"], str(d["gained"]), str(d["lost"]), str(d["followers"]))
    elif kind == "retention":
        table = Table("cohort week", "size", "retained (week 0, 1, ...)")
        for co in answer["cohorts"]:
            table.add_row(co["week"], str(co["size"]), " ".join(map(str, co["retained"])))
    elif kind == "audience":
        table = Table("", "followers", "others")
        for part in ("reactions", "downloads"):
            table.add_row(part, str(answer[part]["followers"]), str(answer[part]["nonFollowers"]))
    elif kind == "activity":
        table = Table("weekday", *(f"{h:02d}" for h in range(24)), title=f"engagement received ({answer['tz']})")
        for name, row in zip(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"), answer["grid"], strict=True):
            table.add_row(name, *map(str, row))
        best = ", ".join(f"{b['weekday']}/{b['hour']:02d}h ({b['count']})" for b in answer["bestHours"])
        console.print(table)
        console.print(f"best hours (weekday/hour, Monday = 0): {best or '-'}")
        return
    elif kind == "peers":
        table = Table("metric", "value", "percentile", "of", f"in band {answer.get('band')}", title=answer.get("asOf"))
        for name, m in (answer.get("metrics") or {}).items():
            band = m.get("band") or {}
            cells = (m["value"], m["percentile"], m["population"], band.get("percentile"))
            table.add_row(name, *map(str, cells))
    else:
        table = Table("badge", "tier", "earned at", "event")
        for e in answer["earned"]:
            table.add_row(e["badge"], str(e["tier"]), e["earnedAt"], e["eventId"])
    console.print(table)


@jobs_cli.command("run")
def run(name: Annotated[str, typer.Argument(help=f"One of: {', '.join(c.JOBS)}")], as_json: AsJson = False) -> None:
    """Run a beat job now, under its lock (never twice at once); its interval slot does not apply."""
    with refusing_bad_input():
        if name not in c.JOBS:
            raise ValidationError(f"unknown job {name!r}: one of {', '.join(c.JOBS)}")
        with command_runtime() as rt:
            if clickhouse.owner_is_elsewhere(rt.settings):
                report = through_worker(rt, c.RUN_JOB_NOW, timeout_s=rt.settings.job_time_limit_s, name=name)
            else:
                report = run_now(rt, name)
    if as_json:
        print(to_json(report))
    else:
        console.print(f"{name}: {to_json(report)}")
