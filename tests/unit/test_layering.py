"""Layering: the model-side packages never depend on the LSP libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("pygls", "lsprotocol")
MODEL_SIDE = ("cache", "completion")


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
