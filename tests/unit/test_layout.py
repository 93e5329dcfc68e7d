"""The layout keeps the architecture readable: packages import only packages below them in the design document's
package order, no import cycles, ``app`` never imports ``tasks``, no private name used outside its module, no
module over 400 lines, and the design document's module map names every module."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.paths import REPO

MAX_LINES = 400
DESIGN = REPO / "docs" / "architecture.md"
TOP_PACKAGES = ("app", "tasks", "bench")


def _modules() -> dict[str, Path]:
    out = {}
    for package in TOP_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, str]]:
    """(imported module, imported name or '') for every import in the module, lazy ones included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ""
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                yield node.module, alias.name


def _section(title: str) -> str:
    return DESIGN.read_text().split(f"### {title}", 1)[1].split("\n#", 1)[0]


def _layers() -> list[list[str]]:
    """The package order of the design document: its first fenced block under "Package order", one layer per line,
    the top first; packages on a line are separated by "·", and what follows two spaces is a comment."""
    block = _section("Package order").split("```", 2)[1]
    layers = []
    for line in block.splitlines()[1:]:
        names = line.split("  ", 1)[0].strip()
        if names and names != "↓":
            layers.append([n.strip().removesuffix("/").removesuffix(".py").replace("/", ".") for n in names.split("·")])
    return layers


def _package(module: str) -> str:
    """``app.read.history`` -> ``app.read``; ``app.producer`` -> ``app.producer``; ``tasks.base`` -> ``tasks``."""
    parts = module.split(".")
    if parts[0] != "app":
        return parts[0]
    return ".".join(parts[:2])


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, imported in _imports(name, path):
            target = f"{module}.{imported}" if f"{module}.{imported}" in MODULES else module
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_package_has_one_place_in_the_package_order() -> None:
    placed = [p for layer in _layers() for p in layer]
    packages = {_package(m) for m in MODULES if m != "app"}
    assert sorted(p for p in set(placed) if placed.count(p) > 1) == []
    assert sorted(packages - set(placed)) == [] and sorted(set(placed) - packages) == []


def test_packages_import_only_packages_below_them() -> None:
    level = {p: i for i, layer in enumerate(_layers()) for p in layer}
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in _graph().items()
        if name != "app"
        for target in targets
        if _package(target) != _package(name) and level[_package(target)] <= level[_package(name)]
    )
    assert offenders == []


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_app_never_imports_tasks() -> None:
    offenders = [
        f"{name} -> {target}"
        for name, targets in _graph().items()
        if name.startswith("app")
        for target in targets
        if target.startswith("tasks")
    ]
    assert offenders == []


def test_no_private_name_is_imported_from_another_module() -> None:
    offenders = [
        f"{name} imports {module}.{imported}"
        for name, path in MODULES.items()
        for module, imported in _imports(name, path)
        if module.split(".")[0] in ("app", "tasks") and imported.startswith("_") and not imported.startswith("__")
    ]
    assert offenders == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES


def test_the_design_documents_module_map_names_every_module() -> None:
    named = set(re.findall(r"`((?:app|tasks|bench)/[\w/]+\.py)`", _section("Module map")))
    files = {str(p.relative_to(REPO)) for p in MODULES.values() if p.name != "__init__.py"}
    assert sorted(files - named) == [] and sorted(named - files) == []


def test_the_import_paths_web_apps_use_keep_working() -> None:
    from app.client import EventProducer, UserMetricEventService, after_commit
    from app.legacy.dual import after_commit as old_after_commit
    from app.producer import EventProducer as OldProducer
    from app.services import UserMetricEventService as OldService

    assert (old_after_commit, OldProducer, OldService) == (after_commit, EventProducer, UserMetricEventService)


def test_the_readers_earlier_import_paths_warn_and_keep_working() -> None:
    from app.read.metrics_service import UserMetricsQueryService
    from app.read.reactions_service import UserReactionQueryService

    for old, name, new in (
        ("app.read.query", "UserMetricsQueryService", UserMetricsQueryService),
        ("app.read.reactions", "UserReactionQueryService", UserReactionQueryService),
    ):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=old):
            module = importlib.import_module(old)
        assert getattr(module, name) is new
