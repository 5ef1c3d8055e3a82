"""Grammar lookup: a fixed table, never a module named by the client, never a failure."""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from completion import syntax
from completion.syntax import ALIASES, GRAMMARS, get_language, grammar_name, make_parser
from lsp_server.documents import Document, DocumentStore

TEXT = "# 形状 😀\r\ndef f(x='😀'):\r\n    return 漢字\n"


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """Each test loads grammars anew (loads are cached per grammar)."""
    syntax._load.cache_clear()
    yield
    syntax._load.cache_clear()


@pytest.fixture
def imports(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every import from now on: ("importlib" or "statement", module name)."""
    seen: list[tuple[str, str]] = []
    real_import_module, real_import = importlib.import_module, builtins.__import__

    def import_module(name: str, package: str | None = None) -> Any:
        seen.append(("importlib", name))
        return real_import_module(name, package)

    def import_(name: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(("statement", name))
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", import_module)
    monkeypatch.setattr(builtins, "__import__", import_)
    return seen


UNKNOWN = ["os", "subprocess", "../evil", "os.path", "tree_sitter_python", "", "Python", "c"]


@pytest.mark.parametrize("language_id", UNKNOWN)
def test_unknown_language_imports_nothing(imports: list[tuple[str, str]], language_id: str) -> None:
    def named(modules: Iterable[str]) -> set[str]:
        """Grammar modules, or modules named after the client's string (other imports,
        such as a library's own lazy ones, may happen meanwhile)."""
        client = language_id.lower()
        return {
            m
            for m in modules
            if m.startswith("tree_sitter") or (client and m.lower().split(".")[0] == client)
        }

    before = named(sys.modules)
    assert grammar_name(language_id) is None
    assert get_language(language_id) is None
    doc = DocumentStore().open("file:///t", TEXT, 1, language_id)
    doc.apply_change((0, 0), (0, 0), "😀", "utf-16")
    assert doc.parser is None and doc.tree is None
    assert named(name for _, name in imports) == set()
    assert named(sys.modules) == before


def test_table_languages_and_aliases_load(imports: list[tuple[str, str]]) -> None:
    assert set(ALIASES.values()) <= set(GRAMMARS)
    for language_id in [*GRAMMARS, *ALIASES]:
        module = GRAMMARS[grammar_name(language_id) or ""][0]
        if importlib.util.find_spec(module) is not None:  # optional extras may be absent
            assert make_parser(language_id) is not None, language_id
    by_name = {name for how, name in imports if how == "importlib"}
    assert by_name <= {module for module, _ in GRAMMARS.values()}
    doc = Document.open("file:///t.py", TEXT, 1, "py")
    assert doc.tree is not None and doc.tree.root_node.type == "module"


def raise_value_error() -> int:
    raise ValueError("Incompatible Language version 99. Must be between 13 and 15")


def raise_runtime_error() -> int:
    raise RuntimeError("broken wheel")


@pytest.mark.parametrize(
    ("loader", "error"), [(raise_value_error, "ValueError"), (raise_runtime_error, "RuntimeError")]
)
def test_grammar_that_fails_to_load_gives_no_tree(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, loader: Any, error: str
) -> None:
    """Every document in the language opens, edits and reads fine; one warning in all."""
    monkeypatch.setitem(sys.modules, "broken_grammar", SimpleNamespace(language=loader))
    monkeypatch.setitem(GRAMMARS, "python", ("broken_grammar", "language"))
    store = DocumentStore()
    with caplog.at_level(logging.INFO, logger="completion.syntax"):
        docs = [
            store.open(f"file:///{i}.py", TEXT, 1, lang)
            for i, lang in enumerate(["python", "python", "py"])
        ]
        docs += [Document.open("file:///py.py", TEXT, 1, "py")]
    for doc in docs:
        doc.apply_change((1, 0), (1, 0), "形", "utf-16")
        assert doc.parser is None and doc.tree is None
    warnings = [r for r in caplog.records if r.name == "completion.syntax"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "python" in warnings[0].getMessage() and error in warnings[0].getMessage()


def test_abi_mismatch_in_language_gives_no_tree(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``Language(ptr)`` itself raising (the real ABI-mismatch path) is caught too."""

    def language(_ptr: object) -> Any:
        raise ValueError("Incompatible Language version 16. Must be between 13 and 15")

    monkeypatch.setattr(syntax, "Language", language)
    with caplog.at_level(logging.WARNING, logger="completion.syntax"):
        doc = Document.open("file:///t.py", TEXT, 1, "python")
        assert make_parser("python") is None
    assert doc.tree is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "python" in caplog.records[0].getMessage()
