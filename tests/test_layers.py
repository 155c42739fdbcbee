"""The package's layers (hdc/__init__.py), read from the source: who imports whom."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BLOCK_TORCH

PACKAGE = Path(__file__).resolve().parent.parent / "hdc"
LAYERS = {
    "errors": 0,
    "config": 0,
    "io": 0,
    "text": 0,
    "data": 0,
    "metrics": 0,
    "schema": 0,
    "model": 1,
    "stream": 1,
    "checkpoint": 2,
    "runtime": 2,
    "predictor": 3,
    "predict": 4,
    "evaluate": 4,
    "explain": 4,
    "explain_html": 4,
    "export": 4,
    "serve": 4,
    "train": 4,
    "news": 4,
    "api": 4,
    "distributed": 4,
    "cli": 5,
}
# Imports inside a function, each for a dependency that a runtime-only install lacks.
LAZY = {("cli", "hdc.train"), ("cli", "hdc.export"), ("predictor", "hdc.checkpoint"), ("distributed", "ray")}
RUNTIME_PATH = (
    "api",
    "cli",
    "predict",
    "evaluate",
    "explain",
    "explain_html",
    "serve",
    "predictor",
    "runtime",
    "stream",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every import of the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                # `from . import x` may name a module x
                names = [
                    f"{target}.{a.name}"
                    for a in child.names
                    if (PACKAGE.parent / f"{target}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                ]
                found.extend((n, in_function) for n in names or [target])
            visit(child, nested)

    visit(ast.parse(path.read_text()), False)
    return found


GRAPH = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    return LAYERS[module.split(".")[1]] if module != "hdc" else -1


def reachable(start: str, lazy: bool) -> set[str]:
    """Everything `start` imports, transitively; with lazy=False, module-level imports only."""
    seen, todo = set(), [start]
    while todo:
        for target, in_function in GRAPH.get(todo.pop(), []):
            if (lazy or not in_function) and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_every_module_has_a_layer():
    assert all(m == "hdc" or m.split(".")[1] in LAYERS for m in GRAPH), sorted(GRAPH)


def test_no_import_runs_to_a_higher_layer():
    upward = [
        (m, t)
        for m, targets in GRAPH.items()
        for t, _ in targets
        if t.startswith("hdc.") and m != "hdc" and layer(t) > layer(m)
    ]
    assert upward == []


def test_no_import_circles():
    for module in GRAPH:
        assert module not in reachable(module, lazy=True), f"{module} imports itself through others"


@pytest.mark.parametrize("module", RUNTIME_PATH)
def test_runtime_path_never_imports_torch_or_lightning(module):
    found = {t.split(".")[0] for t in reachable(f"hdc.{module}", lazy=False)}
    assert not found & {"torch", "lightning", "onnx"}
    assert not {t for t in reachable(f"hdc.{module}", lazy=False)} & {"hdc.model", "hdc.checkpoint", "hdc.train"}


def test_imports_inside_functions_are_only_the_optional_ones():
    lazy = {(m.split(".")[1], t) for m, targets in GRAPH.items() for t, in_function in targets if in_function}
    assert lazy == LAZY


def test_model_never_imports_the_cli():
    assert "hdc.cli" not in reachable("hdc.model", lazy=True)


@pytest.mark.parametrize("module", ["hdc.data", "hdc.text"])
def test_data_and_text_never_import_lightning(module):
    assert not {t for t in reachable(module, lazy=True) if t.split(".")[0] in ("lightning", "torch")}


def test_every_runtime_module_imports_with_torch_blocked():
    modules = sorted(
        m
        for m in GRAPH
        if m != "hdc"
        and m.split(".")[1] in RUNTIME_PATH + ("schema", "config", "io", "text", "data", "metrics", "errors")
    )
    code = BLOCK_TORCH + f"import importlib\nfor m in {modules!r}: importlib.import_module(m)\nprint('ok')\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
