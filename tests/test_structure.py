"""The architecture rules the code keeps: no import cycles, short functions, one-way layers."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "espdetect"
#: Longer functions carry a comment starting with this, saying why they are long.
LONG_MARKER = "# Long:"
MAX_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(path: Path, module: str, known: set[str]) -> Iterator[str]:
    """espdetect modules that ``module`` imports (anywhere but under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_blocks(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if getattr(node, "lineno", 0) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from espdetect.server import control` imports the submodule espdetect.server.control.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        else:
            continue
        yield from (name for name in names if name in known and name != module)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: set(_imports(path, name, known)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_inside_the_package() -> None:
    assert _cycles(_graph()) == []


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        pytest.param("espdetect", "espdetect.server", id="library-server"),
        pytest.param("espdetect", "espdetect.profiling", id="library-profiling"),
        pytest.param("espdetect", "espdetect.cli", id="library-cli"),
        pytest.param("espdetect.server", "espdetect.cli", id="server-cli"),
    ],
)
def test_layers_point_one_way(lower: str, upper: str) -> None:
    graph = _graph()
    upper_modules = {m for m in graph if m == upper or m.startswith(upper + ".")}
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if (module == lower or module.startswith(lower + "."))
        and module not in upper_modules
        and not any(
            module == u or module.startswith(u + ".")
            for u in ("espdetect.server", "espdetect.profiling", "espdetect.cli")
            if lower == "espdetect"
        )
        for target in targets & upper_modules
    )
    assert offenders == []


def _functions() -> Iterator[tuple[Path, ast.FunctionDef | ast.AsyncFunctionDef, list[str]]]:
    for path in _modules().values():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path, node, lines


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function without its docstring."""
    total = (node.end_lineno or node.lineno) - node.lineno + 1
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        total -= (first.end_lineno or first.lineno) - first.lineno + 1
    return total


def test_long_functions_say_why() -> None:
    unexplained = []
    for path, node, lines in _functions():
        if _code_lines(node) <= MAX_LINES:
            continue
        body = lines[node.lineno - 1 : node.end_lineno]
        if not any(line.strip().startswith(LONG_MARKER) for line in body):
            unexplained.append(
                f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({_code_lines(node)} lines)"
            )
    assert unexplained == []


def test_no_attribute_probing_of_detectors_and_encoders() -> None:
    probing = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and node.args
            ):
                target = ast.unparse(node.args[0]).lower()
                if "detector" in target or "encoder" in target:
                    probing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {ast.unparse(node)}")
    assert probing == []
