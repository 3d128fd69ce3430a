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


def _modules(tops: tuple[str, ...] = ("cli", "deploy", "services", "libs")) -> dict[str, pathlib.Path]:
    found = {}
    for top in tops:
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


# weft_client is an independent part: importable on its own (httpx and msgspec only), used by the CLI on top;
# nothing below the CLI may depend on it, and it depends on nothing of ours.
CLIENT_DEPENDENCIES = {"httpx", "msgspec", "weft_client"}


def _top_level_imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_client_imports_only_the_standard_library_httpx_and_msgspec():
    import sys

    foreign = {f"{name} -> {dep}" for name, path in _modules(("weft_client",)).items()
               for dep in _top_level_imports(path) if dep not in CLIENT_DEPENDENCIES | sys.stdlib_module_names}
    assert foreign == set()


def test_only_the_cli_uses_the_client():
    users = {name for name, path in _modules(("deploy", "services", "libs")).items()
             if "weft_client" in _top_level_imports(path)}
    assert users == set()


def test_no_two_client_modules_import_each_other():
    known = _modules(("weft_client",))
    graph = {name: _imports(path, known) for name, path in known.items()}
    pairs = sorted({tuple(sorted((a, b))) for a, deps in graph.items() for b in deps
                    if a != b and a in graph.get(b, set()) and not (a.startswith(b + ".") or b.startswith(a + "."))})
    assert pairs == []


def test_the_client_imports_on_its_own():
    """Importing weft_client loads nothing of ours besides it (and so would work vendored or installed alone)."""
    import subprocess
    import sys

    code = ("import sys; import weft_client; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'libs', 'services', 'cli', 'deploy'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
