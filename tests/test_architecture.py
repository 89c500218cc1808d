"""The package's shape: no import circle anywhere in `src/sdart`, no module past the size a reader can hold, and
front ends that never import each other (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sdart"
MAX_LINES = 420
FRONT_ENDS = ("sdart.cli", "sdart.server", "sdart.batch")
# The CLI sits on top: `sdart serve` and `sdart batch` start the server and the batch runner. Those two never
# import each other, nor the CLI.
MAY_IMPORT = {"sdart.cli": ("sdart.server", "sdart.batch")}
# Old import paths kept as one-line re-exports: they point to wherever the code now lives.
OLD_PATHS = ("sdart.samplers", "sdart.metadata", "sdart.preview", "sdart.ray_runner")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The sdart modules a file imports, wherever the import stands (inside functions too: a lazy import still
    ties the two modules together), except under `if TYPE_CHECKING:`. `from a.b import c` counts as importing `a.b.c` when that is a module."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for block in ast.walk(tree):  # imports for type checkers only run in no process: not a circle
        if isinstance(block, ast.If) and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            block.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, …, a], or None (depth-first search, colouring visited nodes)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " → ".join(cycle or [])


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_front_ends_import_only_what_sits_below_them(front_end):
    others = [other for other in FRONT_ENDS if other != front_end and other not in MAY_IMPORT.get(front_end, ())]
    offenders = {name: sorted(dep for dep in deps if dep.startswith(tuple(others)))
                 for name, deps in import_graph().items() if name.startswith(front_end)}
    assert not {name: deps for name, deps in offenders.items() if deps}


def test_the_engine_layer_imports_no_front_end():
    engine_layer = [name for name in import_graph() if not name.startswith(FRONT_ENDS) and name not in OLD_PATHS]
    offenders = {name: sorted(dep for dep in import_graph()[name] if dep.startswith(FRONT_ENDS))
                 for name in engine_layer}
    assert not {name: deps for name, deps in offenders.items() if deps}


def test_old_paths_are_one_line_re_exports():
    for name in OLD_PATHS:
        code = [line for line in modules()[name].read_text().splitlines() if line.startswith(("from ", "import "))]
        assert len(code) == 1, (name, code)


def test_no_module_is_too_long_to_read():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
