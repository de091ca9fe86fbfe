"""The layout's one-way rule, checked by walking every import in the code.

Data flows one way: connectors -> config -> db -> indexer -> bot, and inside ``bot/`` from
the answering core out to its callers. A module may import its own layer or a lower one,
never a higher one, and no chain of imports may lead back to where it started. Imports
under ``if TYPE_CHECKING:`` are for type names only and are not counted; imports inside
functions are, since they run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("connectors", "config", "db", "indexer", "bot")
# Lowest first. A module belongs to the longest prefix listed.
LAYERS = (
    "bot",  # the package itself only (it is empty); its packages have layers of their own
    "connectors",
    "config",
    "db",
    "indexer",
    "bot.answer",  # the answering core: knows no platform and no observer
    "bot.ops",  # metrics, logs, spans, connector health: observe the core
    "bot.runtime",  # wires a config into the parts
    "bot.chat",  # Slack, Teams, web chat: turn events into questions
    "bot.review",  # reports, digest, traces, eval, cost: read what was asked and voted
    "bot.server",  # composes the HTTP surfaces
    "bot.cli",  # the command line over all of it
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for pkg in PACKAGES
        for p in sorted((REPO / pkg).rglob("*.py"))
        if "migrations" not in p.parts
    }


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """The project modules ``path`` (module ``name``) imports at run time."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"

    def walk(node: ast.AST) -> Iterator[ast.AST]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                yield from (n for stmt in child.orelse for n in [stmt, *walk(stmt)])
                continue
            yield child
            yield from walk(child)

    for node in walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                yield sub if sub in known else source


def layer(name: str) -> int:
    best = max(
        (p for p in LAYERS if name == p or (p != "bot" and name.startswith(p + "."))),
        key=len,
        default="",
    )
    assert best, f"{name} is in no layer: add its package to LAYERS in tests/test_layout.py"
    return LAYERS.index(best)


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {
        name: {m for m in imported(path, name, known) if m != name and m in known}
        for name, path in found.items()
    }


def test_nothing_imports_upward() -> None:
    upward = [
        f"{mod} ({LAYERS[layer(mod)]}) imports {dep} ({LAYERS[layer(dep)]})"
        for mod, deps in graph().items()
        for dep in sorted(deps)
        if layer(dep) > layer(mod)
    ]
    assert not upward, "imports against the one-way rule:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    g = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from bot.ops import metrics\n", {"bot.ops.metrics"}),
        ("from bot.answer.types import Answer\n", {"bot.answer.types"}),
        ("import bot.chat.slack\n", {"bot.chat.slack"}),
        ("if TYPE_CHECKING:\n    from bot.runtime import Runtime\n", set()),
        ("def f():\n    from bot.server import create_app\n", {"bot.server"}),
        ("from . import events\n", {"bot.answer.events"}),
        ("import json\nfrom sqlalchemy import select\n", set()),
    ],
)
def test_the_walk_sees_every_kind_of_import(tmp_path, source, expected) -> None:
    """The checks above are only as good as this reading of imports."""
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    assert set(imported(probe, "bot.answer.probe", set(modules()))) == expected


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer(name)
