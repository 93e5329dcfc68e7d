"""``python -m app``: the command line (``app.cli``), and the benchmarks' commands (``bench``) when run from a
checkout.

The benchmarks are not part of the service: they ship with the source repository, not with the installed package,
and ``app.cli`` never imports them. This entry module, above both, attaches their group when the ``bench`` package
is importable, and otherwise a ``bench`` command that says where to run them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli import cli, main
from app.cli.common import err

BENCH_MISSING = "benchmarks ship with the source repository, not with the installed package; run them from a checkout"


def _attach_bench() -> None:
    try:
        from bench.cli import bench_cli
    except ModuleNotFoundError as exc:
        if exc.name not in ("bench", "bench.cli"):
            raise  # the benchmarks are there but something they import is not: a real error, shown as such
    else:
        cli.add_typer(bench_cli, name="bench")
        return

    @cli.command(
        "bench",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help="Benchmarks (only in a checkout of the source repository).",
    )
    def bench_missing(args: Annotated[list[str] | None, typer.Argument(hidden=True)] = None) -> None:
        err.print(f"[red]error:[/red] {BENCH_MISSING}", soft_wrap=True)
        raise typer.Exit(2)


if __name__ == "__main__":
    _attach_bench()
    main()
