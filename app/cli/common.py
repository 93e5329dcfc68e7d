"""What every command shares: the consoles, refusing bad input with exit code 2, strict JSON, a runtime."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from app.client import EventProducer
from app.core.errors import PermanentError
from app.core.ids import check_ids
from app.core.settings import load_settings
from app.local import embedded_redis
from app.stores import broker, clickhouse, runtime
from app.stores.runtime import Runtime

console = Console()
err = Console(stderr=True)


@contextlib.contextmanager
def refusing_bad_input() -> Iterator[None]:
    """Wrong arguments or configuration: one clear line on stderr and exit code 2, not a traceback."""
    try:
        yield
    except PermanentError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc


def ids(values: Iterable[int], what: str) -> list[int]:
    """Ids given on the command line, checked before anything is started (an id out of range: exit 2)."""
    with refusing_bad_input():
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


def to_json(value: Any, **options: Any) -> str:
    """Strict JSON (no NaN or Infinity tokens, which JSON parsers other than Python's refuse) for every
    ``--json`` output and report."""
    return json.dumps(_finite(value), allow_nan=False, **options)


@contextlib.contextmanager
def command_runtime() -> Iterator[Runtime]:
    """A runtime for this command: the configured Redis, the running stack's, or a temporary embedded one."""
    settings = load_settings()
    with embedded_redis.ensure(settings) as url:
        with runtime.use(Runtime(settings.model_copy(update={"redis_url": url}))) as rt:
            yield rt


def producer(rt: Runtime) -> EventProducer:
    """The web app's producer, on this runtime's broker."""
    return EventProducer(broker.client_app(rt.settings))


def parse_time(value: str | None) -> datetime | None:
    """RFC 3339 / ISO 8601 (a date alone means its midnight, UTC), or None."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 time: {value!r}") from exc
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def require_clickhouse_here(rt: Runtime) -> None:
    """Commands that write ClickHouse in bulk run in this process: refused while a running worker owns the
    embedded engine."""
    if clickhouse.owner_is_elsewhere(rt.settings):
        err.print(
            "[red]error:[/red] the running worker owns the embedded ClickHouse; stop the stack (or use server mode, "
            "CLICKHOUSE_URL=http://...) to run this command"
        )
        raise typer.Exit(2)


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[str, int], None]]:
    """A ``progress(name, n)`` callback that shows one bar per name (on stderr: stdout stays for results)."""
    from rich.progress import Progress

    with Progress(console=err) as progress:
        bars: dict[str, Any] = {}

        def advance(name: str, n: int) -> None:
            if name not in bars:
                bars[name] = progress.add_task(name, total=None)
            progress.advance(bars[name], n)

        yield advance
