"""The benchmarks live beside the service, not in it: ``python -m app bench`` works from a checkout, the service's
CLI never imports them, and an installation without them says so (exit 2). Progress bars go to stderr."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from app.core.paths import REPO

# ``python -m app ARGS`` as an installed package runs it: every import of ``bench`` fails.
WITHOUT_BENCH = """
import runpy, sys

class NoBench:
    def find_spec(self, name, path=None, target=None):
        if name == "bench" or name.startswith("bench."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoBench())
sys.argv = ["app", *sys.argv[1:]]
runpy.run_module("app", run_name="__main__", alter_sys=True)
"""


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, our own arguments
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_the_service_cli_does_not_import_the_benchmarks() -> None:
    done = _python("-c", "import sys, app.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'bench'))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_bench_group_is_attached_from_a_checkout() -> None:
    done = _python("-m", "app", "bench", "--help")
    assert done.returncode == 0, done.stderr
    for command in ("ingest", "read", "jobs", "capacity", "cluster", "legacy"):
        assert command in done.stdout


@pytest.mark.parametrize("args", [("bench",), ("bench", "ingest", "--quick", "--json")])
def test_without_the_benchmarks_bench_exits_2_and_says_why(args: tuple[str, ...]) -> None:
    done = _python("-c", WITHOUT_BENCH, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "benchmarks ship with the source repository" in done.stderr


def test_without_the_benchmarks_the_other_commands_stay() -> None:
    done = _python("-c", WITHOUT_BENCH, "--help")
    assert done.returncode == 0, done.stderr
    for command in ("user-metrics", "run", "migrate", "bench", "dead-letters"):
        assert command in done.stdout


def test_progress_bars_draw_on_stderr() -> None:
    """Every rich ``Progress`` of the command line and the benchmarks is built on the stderr console: with
    ``--json`` stdout holds the JSON document alone."""
    found = 0
    for path in [*sorted((REPO / "app" / "cli").rglob("*.py")), *sorted((REPO / "bench").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Progress":
                found += 1
                console = [k.value for k in node.keywords if k.arg == "console"]
                assert console and getattr(console[0], "id", None) == "err", f"{path.relative_to(REPO)}:{node.lineno}"
    assert found
