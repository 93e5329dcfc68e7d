"""Command line: ``python -m app ...`` (the commands and their ``--json`` output are a contract). One module per
group of commands; each is thin: it parses, calls the code that does the work, and prints."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.markup import escape

from app.cli import events, insights, migration, reads, stack  # noqa: F401 - they register their commands
from app.cli.common import err
from app.cli.root import cli
from app.core.errors import TransientError

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> Any:
    try:
        return cli(args=list(argv) if argv is not None else sys.argv[1:], prog_name="python -m app")
    except TransientError as exc:
        # A store is down or unreachable: one line saying which, and exit 1 (retrying later can succeed).
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise SystemExit(1) from exc
