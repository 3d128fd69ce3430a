"""The layout is the architecture: imports run down the layers only, no service imports another, and no two
modules import each other (docs/decisions/0014-layout.md)."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Top to bottom; a module may import its own layer or any layer below it.
LAYERS = ["cli", "deploy", "services", "libs.runtime", "libs.readmodels", "libs.security", "libs.adapters",
          "libs.domain", "libs.events", "libs.telemetry"]
SERVICES = ["gateway", "planner", "executor", "scheduler", "notifier", "relay"]


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for top in ("cli", "deploy", "services", "libs"):
        for path in (ROOT / top).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: pathlib.Path, known: dict[str, pathlib.Path]) -> set[str]:
    """Project modules a file imports, at any depth (a function-level import still couples)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n in known}


def _layer(module: str) -> int:
    return next(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + "."))


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(path, known) for name, path in known.items()}


def test_imports_run_down_the_layers_only():
    upward = [f"{src} -> {dst}" for src, deps in _graph().items() for dst in deps if _layer(dst) < _layer(src)]
    assert upward == []


def test_no_service_imports_another():
    crossing = []
    for src, deps in _graph().items():
        if src.startswith("services."):
            own = src.split(".")[1]
            crossing += [f"{src} -> {d}" for d in deps if d.startswith("services.") and d.split(".")[1] != own]
    assert crossing == []


def test_no_two_modules_import_each_other():
    graph = _graph()
    pairs = sorted({tuple(sorted((a, b))) for a, deps in graph.items() for b in deps
                    if a != b and a in graph.get(b, set()) and not (a.startswith(b + ".") or b.startswith(a + "."))})
    assert pairs == []
