"""The import graph of ``src/cetl`` flows one way (docs/design.md, "Layers").

Read statically (every ``import`` in a module, including deferred ones inside functions: a
deferred import still couples the two modules), so the test needs no torch and fails on the
module that breaks the rule, naming the edge. A new module must be placed in a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "cetl"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("cetl.cli", "cetl.__main__"),
    ("cetl.workflows",),
    ("cetl.build", "cetl.experiments", "cetl.report", "cetl.run_folder"),
    ("cetl.engine", "cetl.methods"),
    ("cetl.fisher", "cetl.losses", "cetl.source", "cetl.networks", "cetl.monitor"),
    ("cetl.data",),
    (
        "cetl.config",
        "cetl.registry",
        "cetl.errors",
        "cetl.files",
        "cetl.seeding",
        "cetl.version",
        "cetl.summary",
    ),
)
"""Top to bottom: a module may import its own layer's modules and any layer below, never one above."""

LONG_FILE_LINES = 400
LONG_FILE_REASON = "Why one file:"
"""A module over :data:`LONG_FILE_LINES` lines says, in its docstring after this phrase, why it is
not split (DESIGN.md: small modules with one job)."""


def _modules() -> dict[str, Path]:
    modules = {}
    for path in (SOURCE / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted name lives in (``cetl.a.b.Symbol`` → ``cetl.a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (parent packages included, as Python runs them,
    except the root package: its façade imports the adapt workflow lazily, on attribute access)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        # The root façade (cetl/__init__.py) is read at module level only: its one deferred
        # import is PEP 562 attribute access for users, run by nothing inside the package.
        nodes = tree.body if module == PACKAGE else ast.walk(tree)
        targets: set[str | None] = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                targets |= {_resolve(alias.name, modules) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(_resolve(full if full in modules else base, modules))
        targets.discard(None)
        targets.discard(module)
        for target in list(targets):  # importing a.b.c runs a and a.b first
            parent = target.rpartition(".")[0]
            while parent and parent != PACKAGE:
                if parent != module and not module.startswith(parent + "."):
                    targets.add(parent)
                parent = parent.rpartition(".")[0]
        graph[module] = {t for t in targets if t is not None and t.startswith(PACKAGE)}
    return graph


def layer_of(module: str) -> int | None:
    for number, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return number
    return None


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components with more than one module (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_module_has_a_layer(graph):
    unplaced = sorted(m for m in graph if m != PACKAGE and layer_of(m) is None)
    assert not unplaced, f"place these modules in a layer of tests/test_architecture.py: {unplaced}"


def test_no_module_imports_from_a_layer_above_it(graph):
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in sorted(graph.items())
        if module != PACKAGE
        for target in sorted(targets)
        if target != PACKAGE and layer_of(target) < layer_of(module)  # type: ignore[operator]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle_spans_more_than_one_package(graph):
    spanning = [sorted(c) for c in strongly_connected(graph) if len({_package(m) for m in c}) > 1]
    assert not spanning, f"import cycles across packages: {spanning}"


def test_the_checker_sees_a_cycle_and_an_upward_import():
    """The two rules above can fail: a constructed graph with both faults is caught."""
    graph = {"cetl.config": {"cetl.methods.base"}, "cetl.methods.base": {"cetl.config"}}
    assert strongly_connected(graph) == [{"cetl.config", "cetl.methods.base"}]
    assert layer_of("cetl.methods.base") < layer_of("cetl.config")  # type: ignore[operator]


def test_long_modules_say_why_they_are_one_file():
    unexplained = []
    for module, path in sorted(_modules().items()):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > LONG_FILE_LINES:
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if LONG_FILE_REASON not in docstring:
                unexplained.append(f"{module} ({text.count(chr(10))} lines)")
    assert not unexplained, (
        f"modules over {LONG_FILE_LINES} lines without '{LONG_FILE_REASON} ...' in their docstring "
        f"(split them, or say why not): {unexplained}"
    )
