"""Layering: the model-side packages never depend on the LSP libraries; the server never
imports the tooling at module level; the project's module-level imports form no cycle."""

from __future__ import annotations

import ast
import graphlib
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("pygls", "lsprotocol")
MODEL_SIDE = ("cache", "completion")
TOOLING = "tooling"


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) for every import anywhere in the tree (functions, try blocks...)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def is_forbidden(module: str) -> bool:
    top = module.split(".")[0]
    return top in FORBIDDEN


def model_side_files() -> list[Path]:
    return sorted(p for pkg in MODEL_SIDE for p in (REPO / pkg).rglob("*.py"))


def test_model_side_packages_have_files():
    files = model_side_files()
    for pkg in MODEL_SIDE:
        assert (REPO / pkg / "__init__.py") in files


@pytest.mark.parametrize("path", model_side_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_lsp_imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [(line, mod) for line, mod in imported_modules(tree) if is_forbidden(mod)]
    assert bad == [], f"{path.relative_to(REPO)} imports LSP libraries: {bad}"


def test_detector_catches_nested_imports():
    source = (
        "import os\n"
        "def f():\n"
        "    try:\n"
        "        from pygls.server import LanguageServer\n"
        "    except ImportError:\n"
        "        import lsprotocol.types as t\n"
        "class C:\n"
        "    import pygls\n"
        "from . import pygls as local\n"  # a relative import is our own module
    )
    found = [mod for _, mod in sorted(imported_modules(ast.parse(source))) if is_forbidden(mod)]
    assert found == ["pygls.server", "lsprotocol.types", "pygls"]


def test_packages_are_imported_from_this_checkout():
    import cache
    import completion
    import lsp_server

    for module in (cache, completion, lsp_server):
        assert module.__file__ is not None
        path = Path(module.__file__).resolve()
        assert path.is_relative_to(REPO), (module.__name__, path, REPO)
        assert path.parent == REPO / module.__name__


# --- The module import graph -------------------------------------------------------
#
# Nodes are the project's modules (the packages pyproject.toml ships); an edge a -> b
# says a imports b at module level, i.e. while a is being imported: anywhere outside a
# function body and outside an ``if TYPE_CHECKING:`` block. Relative imports are
# resolved; ``from p import n`` points at the module p.n when there is one, else at p.


def project_packages(root: Path = REPO) -> list[str]:
    with (root / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["tool"]["setuptools"]["packages"])


def project_modules(root: Path, packages: list[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages."""
    modules = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run when the module is imported (class bodies do, functions not)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from module_level_imports(ast.Module(body=[stmt], type_ignores=[]))
        else:
            yield from module_level_imports(child)


def resolve_import(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]
) -> set[str]:
    """The project modules an import statement in ``module`` loads (others are dropped)."""
    targets: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:  # `import a.b.c` loads a.b.c: its longest known prefix
            parts = alias.name.split(".")
            prefixes = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
            targets.update([p for p in prefixes if p in known][:1])
        return targets - {module}
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    for alias in node.names:
        if f"{source}.{alias.name}" in known:
            targets.add(f"{source}.{alias.name}")
        elif source in known:
            targets.add(source)
    return targets - {module}


def import_graph(root: Path = REPO, packages: list[str] | None = None) -> dict[str, set[str]]:
    """Module -> the project modules it imports at module level."""
    modules = project_modules(root, packages or project_packages(root))
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = {
            target
            for node in module_level_imports(tree)
            for target in resolve_import(node, name, is_package, known)
        }
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def _top(module: str) -> str:
    return module.split(".")[0]


def test_tooling_is_a_shipped_package():
    assert TOOLING in project_packages()
    assert "lsp_server" in project_packages()
    graph = import_graph()
    assert {"tooling.bench", "tooling.demo", "lsp_server.cli", "lsp_server.server"} <= set(graph)
    # The graph sees relative imports: the benchmarks build on the baseline's helpers.
    assert "tooling.bench" in graph["tooling.bench_edits"]
    assert "lsp_server.loading" in graph["lsp_server.cli"]


def test_nothing_outside_tooling_imports_it_at_module_level():
    graph = import_graph()
    bad = sorted(
        (module, target)
        for module, targets in graph.items()
        if _top(module) != TOOLING
        for target in targets
        if _top(target) == TOOLING
    )
    assert bad == [], f"module-level imports of tooling (import it inside the function): {bad}"


def test_model_side_never_imports_tooling():
    bad = []
    for path in model_side_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        bad += [(str(path.relative_to(REPO)), mod) for _, mod in imported_modules(tree)]
    assert [(p, m) for p, m in bad if _top(m) == TOOLING] == []


def test_tooling_never_imports_the_cli():
    """The CLI dispatches to tooling, so tooling takes what it shares with the CLI from a
    module below both (``lsp_server.loading``), never from ``lsp_server.cli``: even a lazy
    import back would make the two import each other."""
    modules = project_modules(REPO, project_packages())
    bad = []
    for name, path in modules.items():
        if _top(name) != TOOLING:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):  # every import, lazy ones included
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets = resolve_import(node, name, path.name == "__init__.py", set(modules))
                if "lsp_server.cli" in targets:
                    bad.append((name, node.lineno))
    assert bad == []


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


def test_cycle_detector_catches_cycles(tmp_path):
    _write(
        tmp_path,
        {
            "pyproject.toml": '[tool.setuptools]\npackages = ["a", "b"]\n',
            "a/__init__.py": "",
            "a/x.py": "from . import y\n",  # a.x -> a.y (a submodule)
            "a/y.py": "import os\nfrom .sub.w import thing\n",  # a.y -> a.sub.w
            "a/sub/__init__.py": "",
            "a/sub/w.py": "import b.z.nothing\n",  # a.sub.w -> b.z (known prefix)
            "b/__init__.py": "",
            "b/z.py": "try:\n    from a.x import f\nexcept ImportError:\n    pass\n",
            "b/lazy.py": "def f():\n    import a.x\n",  # inside a function: no edge
            "b/typing_only.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a.y\n"
            ),
            "b/cls.py": "class C:\n    from a import x\n",  # class bodies run: an edge
        },
    )
    graph = import_graph(tmp_path)
    assert graph["a.x"] == {"a.y"}
    assert graph["a.y"] == {"a.sub.w"}
    assert graph["a.sub.w"] == {"b.z"}
    assert graph["b.z"] == {"a.x"}
    assert graph["b.lazy"] == set()
    assert graph["b.typing_only"] == set()
    assert graph["b.cls"] == {"a.x"}
    cycle = find_cycle(graph)
    assert cycle is not None
    assert set(cycle) == {"a.x", "a.y", "a.sub.w", "b.z"}
    # Break it with a lazy import: acyclic.
    _write(tmp_path, {"b/z.py": "def g():\n    from a.x import f\n"})
    assert find_cycle(import_graph(tmp_path)) is None
